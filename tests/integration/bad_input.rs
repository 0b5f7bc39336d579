//! Bad input gets a coded 4xx, never a 5xx, and nothing is written: U+0000 in JSON (which
//! PostgreSQL cannot store), duplicate keys (which would show the tenant check one `org_id` and
//! a first-wins parser another), values the database refuses that reach it anyway (plugins'
//! query parameters, defence in depth on native routes), and signed webhook deliveries whose
//! event id or type carries control characters.

use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::contract_wit::Probe;
use crate::harness::{assert_error, Gateway, Resp, TestDb};
use gateway::webhooks::verify::{sign_hex, sign_standard};

struct Scene {
    _db: TestDb,
    pool: PgPool,
    gw: Gateway,
    org: String,
    token: String,
}

impl Scene {
    async fn start() -> Scene {
        let db = TestDb::new().await;
        let gw = Gateway::start(&db).await;
        let pool = db.owner_pool().await;
        let org = gw.create_org("Acme", Some("unmetered")).await;
        let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
        Scene { _db: db, pool, gw, org, token }
    }

    async fn post(&self, path: &str, body: &str) -> Resp {
        self.gw
            .req("POST", path)
            .token(&self.token)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
    }

    async fn n(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn crm_rows(&self) -> i64 {
        self.n("SELECT (SELECT count(*) FROM crm_contacts) + (SELECT count(*) FROM contact_identities) \
                + (SELECT count(*) FROM crm_events) + (SELECT count(*) FROM crm_outbox)")
            .await
    }

    async fn stored_events(&self) -> i64 {
        self.n("SELECT (SELECT count(*) FROM webhook_events) + (SELECT count(*) FROM jobs)").await
    }

    /// A webhook endpoint of the shipped `generic` provider: (id, HMAC key).
    async fn endpoint(&self, scheme: &str) -> (String, Vec<u8>) {
        let r = self.gw.req("POST", "/v1/webhook-endpoints").token(&self.token).json(&json!({"provider": "generic", "scheme": scheme})).send().await;
        assert_eq!(r.status, 201, "{}", r.text);
        let secret = r.json["secret"].as_str().unwrap();
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
            }
            None => secret.as_bytes().to_vec(),
        };
        (r.json["endpoint_id"].as_str().unwrap().to_string(), key)
    }

    async fn deliver_standard(&self, endpoint: &str, key: &[u8], id: &str, body: &[u8]) -> Resp {
        let ts = chrono::Utc::now().timestamp();
        self.gw
            .req("POST", &format!("/v1/webhooks/{endpoint}"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &ts.to_string())
            .header("webhook-signature", &sign_standard(key, id, ts, body))
            .body(body.to_vec())
            .send()
            .await
    }

    async fn deliver_hmac(&self, endpoint: &str, key: &[u8], body: &[u8]) -> Resp {
        self.gw
            .req("POST", &format!("/v1/webhooks/{endpoint}"))
            .header("content-type", "application/json")
            .header("x-webhook-signature", &sign_hex(key, body))
            .body(body.to_vec())
            .send()
            .await
    }
}

fn track(extra: &str) -> String {
    format!(r#"{{"type": "signup", "contact": {{"email": "ada@example.com"}}{extra}}}"#)
}

#[tokio::test]
async fn nul_in_json_is_400_invalid_json_on_plugin_and_native_routes_and_nothing_is_written() {
    let s = Scene::start().await;
    // Was 502 PLUGIN_FAILED: the plugin's insert failed in PostgreSQL.
    for body in [
        r#"{"type": "sign\u0000up", "contact": {"email": "ada@example.com"}}"#.to_string(),
        track(r#", "props": {"note": "a\u0000b"}"#),
        track(r#", "props": {"k\u0000": 1}"#),
    ] {
        let r = s.post("/v1/crm/track", &body).await;
        assert_error(&r, 400, "INVALID_JSON");
        assert!(r.json["error"].as_str().unwrap().contains("U+0000"), "{}", r.text);
        assert!(r.json["details"]["line"].is_u64() && r.json["details"]["column"].is_u64(), "{}", r.text);
    }
    assert_eq!(s.crm_rows().await, 0);
    // Was 500 INTERNAL on a native route.
    let r = s.post("/v1/businesses", r#"{"name": "Sho\u0000p"}"#).await;
    assert_error(&r, 400, "INVALID_JSON");
    assert_eq!(s.n("SELECT count(*) FROM businesses").await, 0);
    // The same bodies without the NUL go through.
    let r = s.post("/v1/crm/track", &track(r#", "props": {"note": "a\\u0001b"}"#)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post("/v1/businesses", r#"{"name": "Shop"}"#).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let _ = &s.org;
}

#[tokio::test]
async fn duplicate_keys_are_refused_so_the_tenant_check_sees_every_org_id() {
    let s = Scene::start().await;
    let other = uuid::Uuid::new_v4();
    // serde_json keeps the last value: the tenant check saw only `mine` and let this through.
    let body = track(&format!(r#", "org_id": "{other}", "org_id": "{}""#, s.org));
    let r = s.post("/v1/crm/track", &body).await;
    assert_error(&r, 400, "INVALID_JSON");
    assert_eq!(r.json["details"]["duplicate_key"], "org_id", "{}", r.text);
    let body = track(&format!(r#", "tenant_id": "{}", "tenant_id": "{other}""#, s.org));
    assert_error(&s.post("/v1/crm/track", &body).await, 400, "INVALID_JSON");
    // Anywhere in the body, not only tenant fields.
    let r = s.post("/v1/crm/track", &track(r#", "props": {"plan": "free", "plan": "pro"}"#)).await;
    assert_error(&r, 400, "INVALID_JSON");
    assert_eq!(r.json["details"]["duplicate_key"], "plan");
    let r = s.post("/v1/businesses", r#"{"name": "A", "name": "B"}"#).await;
    assert_error(&r, 400, "INVALID_JSON");
    assert_eq!(s.crm_rows().await, 0);
    assert_eq!(s.n("SELECT count(*) FROM businesses").await, 0);
    // One org_id, the caller's: accepted.
    let r = s.post("/v1/crm/track", &track(&format!(r#", "org_id": "{}""#, s.org))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn values_the_database_refuses_in_a_plugins_query_are_a_4xx() {
    let s = Scene::start().await;
    // Query parameters reach crm-track's filters unparsed by the gateway: PostgreSQL refuses
    // the NUL (22021) and the timestamp (22007). Both were 502 PLUGIN_FAILED.
    for q in ["type=a%00b", "before=not-a-time"] {
        let r = s.gw.req("GET", &format!("/v1/crm/events?{q}")).token(&s.token).send().await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert!(!r.text.contains("invalid input syntax") && !r.text.contains("0x00"), "database text leaked: {}", r.text);
    }
    let r = s.gw.req("GET", "/v1/crm/events?type=signup").token(&s.token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn the_host_reports_a_refused_value_as_constraint_violation_named_by_its_condition() {
    let p = Probe::start().await;
    let cases = [
        (json!({"insert": {"table": "probe_items", "columns": ["name", "props"], "rows": [[{"text": "j"}, {"json": "{\"a\": \"\\u0000\"}"}]]}}), "untranslatable_character"),
        (json!({"insert": {"table": "probe_items", "columns": ["name", "qty"], "rows": [[{"text": "q"}, {"int": 9_999_999_999i64}]]}}), "numeric_value_out_of_range"),
        (json!({"select": {"table": "probe_items", "columns": ["name"], "filters": [{"column": "created_at", "op": "lt", "value": {"text": "not a time"}}]}}), "invalid_datetime_format"),
        (json!({"select": {"table": "probe_items", "columns": ["name"], "filters": [{"column": "id", "op": "eq", "value": {"text": "nope"}}]}}), "invalid_text_representation"),
    ];
    for (step, condition) in cases {
        // Was `invalid("a value does not fit its column")`, indistinguishable from a malformed
        // query; the transaction is aborted either way, as for any database error.
        let r = p.run(&p.a, json!([step, {"select": {"table": "probe_items", "columns": ["name"]}}]), "error").await;
        assert_error(&r, 409, "PROBE_CONFLICT");
        let results = &r.json["details"]["results"];
        assert_eq!(results[0], json!({"err": "constraint-violation", "detail": condition}), "{}", r.text);
        assert_eq!(results[1]["err"], "aborted", "{}", r.text);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM probe_items").fetch_one(&p.pool).await.unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_value_the_database_refuses_is_a_400_without_its_text_on_native_code() {
    // Defence in depth for native handlers: the payload phase refuses U+0000 first, so the
    // mapping is checked on the real error PostgreSQL gives.
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    for (sql, bind) in [("SELECT $1::text", "a\0b"), ("SELECT $1::int4::text", "99999999999"), ("SELECT $1::uuid::text", "nope")] {
        let e = sqlx::query_scalar::<_, String>(sql).bind(bind).fetch_one(&pool).await.unwrap_err();
        assert!(gateway::error::is_data_exception(&e), "{e}");
        let api = gateway::error::ApiError::from(e);
        assert_eq!((api.code.status().as_u16(), api.code_str()), (400, "VALIDATION_FAILED"), "{sql}");
        assert_eq!(api.message, "a value in the request cannot be stored");
    }
}

#[tokio::test]
async fn signed_deliveries_with_control_characters_in_id_or_type_are_400_and_nothing_is_stored() {
    let s = Scene::start().await;
    let (hmac_ep, hmac_key) = s.endpoint("hmac-sha256").await;
    let (std_ep, std_key) = s.endpoint("standard-webhooks").await;
    // Every one of these was a 500 (PostgreSQL refused the NUL), retried by providers forever;
    // the tab was stored.
    let cases: Vec<(Resp, &str)> = vec![
        (s.deliver_hmac(&hmac_ep, &hmac_key, br#"{"id": "m\u00001", "type": "email.replied"}"#).await, "/id,/type"),
        (s.deliver_hmac(&hmac_ep, &hmac_key, br#"{"id": "m1", "type": "email\u0000replied"}"#).await, "/id,/type"),
        (s.deliver_standard(&std_ep, &std_key, "msg_1", br#"{"type": "email\u0000replied"}"#).await, "/type"),
        (s.deliver_standard(&std_ep, &std_key, "msg_2", br#"{"type": "email\u001breplied"}"#).await, "/type"),
        (s.deliver_standard(&std_ep, &std_key, "msg\t3", br#"{"type": "email.replied"}"#).await, "webhook-id"),
    ];
    for (r, field) in &cases {
        assert_error(r, 400, "VALIDATION_FAILED");
        assert_eq!(r.json["details"][0]["field"], *field, "{}", r.text);
    }
    assert_eq!(s.stored_events().await, 0);
    // A NUL cannot even be sent in a header: the HTTP parser refuses it with a 4xx.
    let mut c = tokio::net::TcpStream::connect(&s.gw.addr).await.unwrap();
    let raw = format!(
        "POST /v1/webhooks/{std_ep} HTTP/1.1\r\nhost: x\r\nwebhook-id: a\0b\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,AAAA\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(10), c.read_exact(&mut head)).await.unwrap().unwrap();
    let status: u16 = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    assert!((400..500).contains(&status), "{}", String::from_utf8_lossy(&head));
    assert_eq!(s.stored_events().await, 0);
}

#[tokio::test]
async fn a_raw_body_is_stored_as_the_bytes_it_was_whatever_it_holds() {
    let s = Scene::start().await;
    let (hmac_ep, hmac_key) = s.endpoint("hmac-sha256").await;
    let (std_ep, std_key) = s.endpoint("standard-webhooks").await;
    // U+0000 and a duplicate key elsewhere in a provider's body are the provider's business:
    // the body is bytes, stored as signed.
    let json_body: &[u8] = br#"{"id": "m1", "type": "email.replied", "note": "a\u0000b", "x": 1, "x": 2}"#;
    let binary: &[u8] = b"\x00\x01\xff\xfe not json \x00";
    let r = s.deliver_hmac(&hmac_ep, &hmac_key, json_body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.deliver_standard(&std_ep, &std_key, "msg_bin", binary).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stored: Vec<(String, Option<String>, Vec<u8>)> =
        sqlx::query_as("SELECT event_key, event_type, body FROM webhook_events ORDER BY event_key").fetch_all(&s.pool).await.unwrap();
    assert_eq!(
        stored,
        vec![
            ("m1:email.replied".to_string(), Some("email.replied".to_string()), json_body.to_vec()),
            ("msg_bin".to_string(), None, binary.to_vec()),
        ]
    );
}
