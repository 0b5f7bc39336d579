//! The secret key ring (issue #17): a rotation with `gateway secrets reseal` on the real
//! binary and database (add a key, reseal, remove the old key: everything still opens and
//! webhooks still verify), values sealed before the ring, and replicas started with rings
//! that differ.

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{gateway_command, Gateway, GatewayOptions, Resp, TestDb};
use gateway::webhooks::verify::sign_standard;

fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

fn with_ring(db: &TestDb, data_dir: Option<&std::path::Path>, token: Option<&str>, ring: &str) -> GatewayOptions {
    let mut o = GatewayOptions::new(db);
    if let Some(d) = data_dir {
        o.data_dir = d.to_path_buf();
    }
    if let Some(t) = token {
        o.bootstrap_token = Some(t.to_string());
    }
    o.extra_env.push(("GATEWAY_SECRET_KEY".into(), ring.into()));
    // The notify URL below is on loopback.
    o.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    o
}

/// `gateway secrets reseal --json` with `opts`' ring: `(success, report, stderr)`.
fn reseal(opts: &GatewayOptions) -> (bool, Value, String) {
    let out = gateway_command(opts).args(["secrets", "reseal", "--batch", "2", "--json"]).stdin(Stdio::null()).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn deliver(gw: &Gateway, endpoint: &str, key: &[u8], id: &str) -> Resp {
    let body = format!(r#"{{"id":"{id}","type":"lead.replied"}}"#);
    let ts = chrono::Utc::now().timestamp();
    gw.req("POST", &format!("/v1/webhooks/{endpoint}"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &ts.to_string())
        .header("webhook-signature", &sign_standard(key, id, ts, body.as_bytes()))
        .body(body.into_bytes())
        .send()
        .await
}

/// Every sealed value in the database with its first 5 bytes (format and key id), as hex.
async fn heads(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT encode(substring(sealed from 1 for 5), 'hex') FROM webhook_secrets \
         UNION ALL SELECT encode(substring(sealed from 1 for 5), 'hex') FROM provider_secrets \
         UNION ALL SELECT encode(substring(notify_secret from 1 for 5), 'hex') FROM tenant_settings WHERE notify_secret IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn wait_log(gw: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = gw.stderr().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| pred(l));
        if let Some(l) = found {
            return l;
        }
        assert!(Instant::now() < deadline, "no log line: {what}\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_rotation_adds_a_key_reseals_and_drops_the_old_key_with_everything_still_opening() {
    let db = TestDb::new().await;
    let owner = db.owner_pool().await;
    let (k1, k2) = (random_key(), random_key());
    let first = with_ring(&db, None, None, &k1);
    let (data_dir, token) = (first.data_dir.clone(), first.bootstrap_token.clone().unwrap());
    let mut gw = Gateway::start_with(first).await;

    // One of each sealed secret: a webhook endpoint's, a provider credential, a notify secret.
    let org = gw.create_org("Rotate", Some("unmetered")).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "admin@rotate.test").await;
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin).json(&json!({"provider": "generic", "scheme": "standard-webhooks"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let endpoint = r.json["endpoint_id"].as_str().unwrap().to_string();
    let secret = r.json["secret"].as_str().unwrap().to_string();
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let r = gw
        .req("PUT", &format!("/v1/admin/orgs/{org}/providers/openai"))
        .token(&gw.super_token)
        .json(&json!({"credentials": {"api_key": "sk-test-rotate"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.req("PUT", "/v1/settings").token(&admin).json(&json!({"notify_url": "http://127.0.0.1:9/hooks/gateway"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(deliver(&gw, &endpoint, &key, "msg_1").await.status, 200);

    // The webhook secret as a gateway before key rings sealed it (format 1, no key id): the
    // same bytes without the id.
    sqlx::query("UPDATE webhook_secrets SET sealed = '\\x01'::bytea || substring(sealed from 6)").execute(&owner).await.unwrap();
    let before = heads(&owner).await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().any(|h| h.starts_with("01")), "{before:?}");
    gw.terminate().await;

    // Step 1: every replica gets the new key first in its ring; the old key still opens.
    let ring = format!("{k2},{k1}");
    let gw = Gateway::start_with(with_ring(&db, Some(&data_dir), Some(&token), &ring)).await;
    assert_eq!(deliver(&gw, &endpoint, &key, "msg_2").await.status, 200, "a value sealed before the ring still opens");

    // Step 2: reseal, while the replica serves. Everything moves to the new key, once.
    let (ok, report, err) = reseal(&with_ring(&db, Some(&tempdir_for_cli()), None, &ring));
    assert!(ok, "{report} {err}");
    assert_eq!((report["resealed"].as_u64(), report["current"].as_u64(), report["unreadable"].as_array().map(Vec::len)), (Some(3), Some(0), Some(0)), "{report}");
    let newest = report["newest_key_id"].as_str().unwrap().to_string();
    assert_eq!(heads(&owner).await, vec![format!("02{newest}"); 3]);
    let (ok, again, err) = reseal(&with_ring(&db, Some(&tempdir_for_cli()), None, &ring));
    assert!(ok, "{again} {err}");
    assert_eq!((again["resealed"].as_u64(), again["current"].as_u64()), (Some(0), Some(3)), "idempotent: {again}");
    assert_eq!(deliver(&gw, &endpoint, &key, "msg_3").await.status, 200);
    let mut gw = gw;
    gw.terminate().await;

    // Step 3: the old key leaves the ring. Everything opens with the new key alone.
    let gw = Gateway::start_with(with_ring(&db, Some(&data_dir), Some(&token), &k2)).await;
    assert_eq!(deliver(&gw, &endpoint, &key, "msg_4").await.status, 200, "webhooks still verify");
    let (ok, check, err) = reseal(&with_ring(&db, Some(&tempdir_for_cli()), None, &k2));
    assert!(ok, "{check} {err}");
    assert_eq!((check["resealed"].as_u64(), check["current"].as_u64(), check["unreadable"].as_array().map(Vec::len)), (Some(0), Some(3), Some(0)), "{check}");

    // A ring without the key the values are sealed with: reseal fails, naming the key id.
    let (ok, bad, err) = reseal(&with_ring(&db, Some(&tempdir_for_cli()), None, &k1));
    assert!(!ok, "{bad}");
    assert_eq!(bad["unreadable"].as_array().map(Vec::len), Some(3), "{bad}");
    assert!(err.contains(&newest) && err.contains("not in this replica's key ring"), "{err}");
    assert!(!err.contains("sk-test-rotate") && !err.contains(&secret), "no secret in the output: {err}");
}

/// A fresh data directory for a CLI run (no `secret-key` file: the ring comes from the env).
fn tempdir_for_cli() -> std::path::PathBuf {
    crate::harness::tempdir("gwcli")
}

#[tokio::test]
async fn replicas_with_different_rings_say_so_at_start_up_and_an_unknown_key_id_is_named() {
    let db = TestDb::new().await;
    let (k1, k2, k3) = (random_key(), random_key(), random_key());
    let a = Gateway::start_with(with_ring(&db, None, None, &k1)).await;
    let a_ids = wait_log(&a, "the ring's key ids", |l| l["message"] == "secret key ring").await["key_ids"].as_str().unwrap().to_string();
    assert_eq!(a_ids.len(), 8, "{a_ids}");

    let org = a.create_org("Rings", Some("unmetered")).await;
    let (admin, _, _) = a.create_token(&org, "admin", "admin@rings.test").await;
    let r = a.req("POST", "/v1/webhook-endpoints").token(&admin).json(&json!({"provider": "generic", "scheme": "standard-webhooks"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let endpoint = r.json["endpoint_id"].as_str().unwrap().to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(r.json["secret"].as_str().unwrap().strip_prefix("whsec_").unwrap())
        .unwrap();

    // A replica with another key: an error naming the key id it lacks.
    let b = Gateway::start_with(with_ring(&db, None, None, &k2)).await;
    let line = wait_log(&b, "the ring mismatch", |l| l["level"] == "ERROR" && l["message"].as_str().is_some_and(|m| m.starts_with("secret key rings differ"))).await;
    assert_eq!(line["missing_here"], a_ids.as_str(), "{line}");
    assert_eq!(line["other_ring"], a_ids.as_str(), "{line}");
    // What A sealed does not open on B: refused like any bad signature, and B's log names the key.
    let r = deliver(&b, &endpoint, &key, "msg_b").await;
    assert_eq!(r.status, 401, "{}", r.text);
    wait_log(&b, "the unknown key id", |l| {
        l["level"] == "ERROR" && l["message"].as_str().is_some_and(|m| m.contains(&format!("key id {a_ids}, which is not in this replica's key ring")))
    })
    .await;
    assert_eq!(deliver(&a, &endpoint, &key, "msg_a").await.status, 200);

    // A replica mid-rotation (holding a new key behind the sealing one): a warning, not an error.
    let c = Gateway::start_with(with_ring(&db, None, None, &format!("{k1},{k3}"))).await;
    let warn = wait_log(&c, "the rotation warning", |l| {
        l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.starts_with("secret key rings differ")) && l["missing_there"].as_str().is_some_and(|m| !m.is_empty())
    })
    .await;
    assert_eq!(warn["missing_here"], "", "{warn}");
    assert_eq!(deliver(&c, &endpoint, &key, "msg_c").await.status, 200, "C opens what A sealed");
    // B seals with a key C lacks: C reports that as an error.
    wait_log(&c, "C against B", |l| l["level"] == "ERROR" && l["message"].as_str().is_some_and(|m| m.starts_with("secret key rings differ"))).await;
}
