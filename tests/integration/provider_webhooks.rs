//! Provider webhook schemes against the fake providers: Smartlead (its signature header or
//! the body's `secret_key`, both event spellings, opens and clicks without a message id) and
//! HeyReach (a `?secret=` token in the URL, never logged); duplicates; other orgs' endpoints.

use std::time::{Duration, Instant};

use fake_providers::{heyreach, smartlead, FakeHeyreach, FakeSmartlead};
use serde_json::{json, Value};

use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, Resp, TestDb};
use gateway::webhooks::verify::sign_hex;

/// The webhook half of the shipped `[providers.smartlead]` and `[providers.heyreach]`, under
/// the same file name as the shipped one (which it replaces), with `echo` as the adapter: these
/// tests are about verification and storage, not normalisation.
const PROVIDERS: &str = r#"
[providers.smartlead]
route = "provider_smartlead"
# `X-Smartlead-Signature: sha256=<hex HMAC of the body>` or the body's `secret_key`.
verify = "smartlead"
# Replies carry a message id; opens and clicks only a stats id; both spellings of the type
# field (`event_type`, older `event`). Nothing at all: sha256 of the body.
event_key = [
    ["/reply_message/message_id", "/event_type"],
    ["/reply_message/message_id", "/event"],
    ["/stats_id", "/event_type"],
    ["/stats_id", "/event"],
]
event_type = ["/event_type", "/event"]
# Smartlead retries 3 times itself; ours are the adapter's attempts.
max_attempts = 5
retry_base_ms = 1000

[providers.heyreach]
route = "provider_heyreach"
# HeyReach does not sign: the registered URL carries `?secret=<token>`.
verify = "url-token"
# Messages and replies carry a message id; connection and tag events none (the body's hash).
event_key = [["/message/id", "/eventType"]]
event_type = "/eventType"
max_attempts = 5
retry_base_ms = 1000

[[route]]
id = "provider_smartlead"
internal = true
target = "plugin:echo"

[[route]]
id = "provider_heyreach"
internal = true
target = "plugin:echo"
"#;

async fn start(db: &TestDb) -> Gateway {
    let mut opts = GatewayOptions::new(db);
    opts.policies = policies_with("providers.toml", PROVIDERS);
    Gateway::start_with(opts).await
}

async fn admin(gw: &Gateway, name: &str) -> String {
    let org = gw.create_org(name, Some("unmetered")).await;
    gw.create_token(&org, "admin", &format!("admin@{}.test", name.to_lowercase())).await.0
}

/// Creates an endpoint; `(endpoint_id, delivery path, secret)`.
async fn endpoint(gw: &Gateway, token: &str, body: Value) -> (String, String, String) {
    let r = gw.req("POST", "/v1/webhook-endpoints").token(token).json(&body).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = |k: &str| r.json[k].as_str().unwrap().to_string();
    (s("endpoint_id"), s("path"), s("secret"))
}

/// The one answer every failed proof gets: same status, code and message.
#[track_caller]
fn refused(r: &Resp) {
    assert_error(r, 401, "INVALID_SIGNATURE");
    assert_eq!(r.json["error"], "missing or invalid webhook signature", "{}", r.text);
}

fn accepted(d: &fake_providers::Delivered) -> String {
    assert_eq!(d.status, 200, "{}", d.body);
    let v: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(v["ok"], true, "{}", d.body);
    v["event_id"].as_str().unwrap_or_else(|| panic!("not new: {}", d.body)).to_string()
}

fn duplicate(d: &fake_providers::Delivered) {
    assert_eq!((d.status, serde_json::from_str::<Value>(&d.body).unwrap()), (200, json!({"ok": true, "duplicate": true})), "{}", d.body);
}

fn rejected(d: &fake_providers::Delivered) {
    assert_eq!(d.status, 401, "{}", d.body);
    let v: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!((v["error_code"].as_str(), v["error"].as_str()), (Some("INVALID_SIGNATURE"), Some("missing or invalid webhook signature")));
}

/// `(events, jobs)` stored for this endpoint.
async fn stored(db: &TestDb, endpoint: &str) -> (i64, i64) {
    let pool = db.owner_pool().await;
    let id: uuid::Uuid = endpoint.parse().unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE endpoint_id = $1").bind(id).fetch_one(&pool).await.unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs j JOIN webhook_events e ON e.id = j.ref_id WHERE e.endpoint_id = $1 AND j.kind = 'webhook'")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    (events, jobs)
}

async fn event_types(gw: &Gateway, token: &str) -> Vec<String> {
    let r = gw.req("GET", "/v1/webhook-events?limit=500").token(token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut t: Vec<String> = r.json["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap_or("-").to_string()).collect();
    t.sort();
    t
}

/// Waits until the gateway has logged `needle` (its log is written asynchronously), then
/// returns everything it logged.
async fn logs_after(gw: &Gateway, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = format!("{}{}", gw.stdout(), gw.stderr());
        if all.contains(needle) {
            return all;
        }
        assert!(Instant::now() < deadline, "never logged {needle:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn smartlead_signature_or_body_secret_both_spellings_and_stable_keys() {
    let db = TestDb::new().await;
    let gw = start(&db).await;
    let acme = admin(&gw, "Acme").await;
    let other = admin(&gw, "Other").await;

    // Smartlead's secret is typed into Smartlead's UI: the gateway takes the caller's.
    let secret = "acme-smartlead-secret-0001";
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "smartlead", "secret": "short"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "smartlead", "scheme": "url-token"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "generic", "scheme": "smartlead"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "generic", "scheme": "hmac-sha256", "secret": secret})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let list = gw.req("GET", "/v1/webhook-endpoints").token(&acme).send().await;
    assert_eq!(list.json["endpoints"], json!([]), "a refused creation wrote nothing");

    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "smartlead", "secret": secret})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.json["scheme"].as_str(), r.json["secret"].as_str(), r.json["signature_header"].as_str()), (Some("smartlead"), Some(secret), Some("x-smartlead-signature")));
    let (ep, path) = (r.json["endpoint_id"].as_str().unwrap().to_string(), r.json["path"].as_str().unwrap().to_string());
    assert_eq!(path, format!("/v1/webhooks/{ep}"));
    // Without a secret, one is generated (64 hex characters).
    let (_, _, generated) = endpoint(&gw, &other, json!({"provider": "smartlead"})).await;
    assert_eq!(generated.len(), 64);
    let other_secret = "other-smartlead-secret-002";
    let (other_ep, other_path, _) = endpoint(&gw, &other, json!({"provider": "smartlead", "secret": other_secret})).await;

    let sl = FakeSmartlead::start("sl-key").await.unwrap();
    sl.set_webhook_secret(Some(secret));
    let url = format!("http://{}{path}", gw.addr);
    use smartlead::{Auth, Event};
    // Either proof suffices; both spellings of a reply are stored with their type.
    accepted(&sl.deliver(&url, &Event::reply(7, "ann@lead.test", "<r1@mail>", "Yes"), Auth::Signature).await.unwrap());
    accepted(&sl.deliver(&url, &Event::reply(7, "bob@lead.test", "<r2@mail>", "Maybe"), Auth::BodySecret).await.unwrap());
    accepted(&sl.deliver(&url, &Event::reply(7, "cat@lead.test", "<r3@mail>", "Sure").legacy(), Auth::Both).await.unwrap());
    assert_eq!(event_types(&gw, &acme).await, ["EMAIL_REPLIED", "EMAIL_REPLY", "EMAIL_REPLY"]);
    // Smartlead retrying a reply (a new timestamp, the same message): stored once.
    duplicate(&sl.deliver(&url, &Event::reply(7, "ann@lead.test", "<r1@mail>", "Yes"), Auth::BodySecret).await.unwrap());
    assert_eq!(stored(&db, &ep).await, (3, 3));

    // Opens and clicks carry no message id: the stats id, else the body's hash.
    let open = Event::engagement("EMAIL_OPEN", 7, "ann@lead.test", Some("st-1"));
    accepted(&sl.deliver(&url, &open, Auth::Signature).await.unwrap());
    duplicate(&sl.deliver(&url, &open, Auth::Signature).await.unwrap());
    let click = Event::engagement("EMAIL_LINK_CLICK", 7, "ann@lead.test", None).payload(Some(secret)).to_string();
    let send_raw = |body: String| gw.req("POST", &path).header("content-type", "application/json").body(body).send();
    let first = send_raw(click.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.json["event_id"].is_string(), "{}", first.text);
    assert_eq!(send_raw(click.clone()).await.json, json!({"ok": true, "duplicate": true}));
    let key: String = sqlx::query_scalar("SELECT event_key FROM webhook_events WHERE id = $1::uuid")
        .bind(first.json["event_id"].as_str().unwrap())
        .fetch_one(&db.owner_pool().await)
        .await
        .unwrap();
    assert!(key.starts_with("sha256:") && key.len() == 71, "{key}");
    assert_eq!(stored(&db, &ep).await, (5, 5));

    // Every failure is the same 401, and stores nothing.
    sl.set_webhook_secret(Some("not-the-secret-at-all-000"));
    let fresh = || Event::reply(7, "dan@lead.test", "<r9@mail>", "Hi");
    for auth in [Auth::Signature, Auth::BodySecret, Auth::Both, Auth::Neither] {
        rejected(&sl.deliver(&url, &fresh(), auth).await.unwrap());
    }
    let body = fresh().payload(None).to_string();
    refused(&gw.req("POST", &path).header("x-smartlead-signature", "sha256=zz").body(body.clone()).send().await);
    refused(&gw.req("POST", &path).header("x-smartlead-signature", &sign_hex(secret.as_bytes(), b"{}")).body(body.clone()).send().await);
    // The bare hex form is accepted as well as `sha256=`.
    let ok = gw.req("POST", &path).header("x-smartlead-signature", &sign_hex(secret.as_bytes(), body.as_bytes())).body(body.clone()).send().await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(stored(&db, &ep).await, (6, 6));

    // Another org's secret does not open this org's endpoint, nor the reverse.
    sl.set_webhook_secret(Some(other_secret));
    rejected(&sl.deliver(&url, &Event::reply(7, "eve@lead.test", "<x1@mail>", "x"), Auth::Both).await.unwrap());
    sl.set_webhook_secret(Some(secret));
    rejected(&sl.deliver(&format!("http://{}{other_path}", gw.addr), &Event::reply(7, "eve@lead.test", "<x2@mail>", "x"), Auth::Both).await.unwrap());
    assert_eq!(stored(&db, &other_ep).await, (0, 0));
    assert_eq!(event_types(&gw, &other).await, Vec::<String>::new());

    // Registered at the fake Smartlead like the adapter does, delivered from there.
    let hook = json!({"webhook_url": url, "association_type": "user", "event_type_map": {"EMAIL_REPLY": true}});
    let r = fake_call(&format!("{}/webhook/create?api_key=sl-key", sl.base_url()), &hook).await;
    assert_eq!(r["ok"], true);
    let sent = sl.deliver_to_registered(&Event::reply(8, "fay@lead.test", "<r10@mail>", "Ok"), Auth::BodySecret).await.unwrap();
    assert_eq!(sent.len(), 1);
    let last = accepted(&sent[0].1);
    let logs = logs_after(&gw, &last).await;
    for s in [secret, other_secret, "not-the-secret-at-all-000"] {
        assert!(!logs.contains(s), "a webhook secret was logged");
    }
}

/// POSTs JSON to a fake provider's API.
async fn fake_call(url: &str, body: &Value) -> Value {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(url).header("content-type", "application/json").header("x-api-key", "hr-key").body(http_body_util::Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn heyreach_url_tokens_are_checked_stored_once_and_never_logged() {
    let db = TestDb::new().await;
    let gw = start(&db).await;
    let acme = admin(&gw, "Acme").await;
    let other = admin(&gw, "Other").await;

    // The token is generated and shown once, inside the delivery path.
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme).json(&json!({"provider": "heyreach", "secret": "my-own-token-1234567"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    let (ep, path, token) = endpoint(&gw, &acme, json!({"provider": "heyreach"})).await;
    assert_eq!(path, format!("/v1/webhooks/{ep}?secret={token}"));
    let listed = gw.req("GET", "/v1/webhook-endpoints").token(&acme).send().await;
    assert_eq!(listed.json["endpoints"][0]["path"], format!("/v1/webhooks/{ep}"), "listings never show the token");
    assert_eq!(listed.json["endpoints"][0]["scheme"], "url-token");
    let (other_ep, other_path, other_token) = endpoint(&gw, &other, json!({"provider": "heyreach", "scheme": "url-token"})).await;

    let hr = FakeHeyreach::start("hr-key").await.unwrap();
    let campaign = hr.state().campaigns.keys().next().copied().unwrap();
    let url = format!("http://{}{path}", gw.addr);
    let bare = format!("http://{}/v1/webhooks/{ep}", gw.addr);
    let reply = heyreach::Event::reply(campaign, "https://www.linkedin.com/in/ann", "msg-1", "Happy to chat");
    let first = accepted(&hr.deliver(&url, &reply).await.unwrap());
    duplicate(&hr.deliver(&url, &heyreach::Event::reply(campaign, "https://www.linkedin.com/in/ann", "msg-1", "Happy to chat")).await.unwrap());
    // No message id: the body's hash identifies it (a redelivery is the same bytes).
    let accepted_conn = heyreach::Event::other("CONNECTION_REQUEST_ACCEPTED", campaign, "https://www.linkedin.com/in/ann");
    accepted(&hr.deliver(&url, &accepted_conn).await.unwrap());
    duplicate(&hr.deliver(&url, &accepted_conn).await.unwrap());
    assert_eq!(stored(&db, &ep).await, (2, 2));
    assert_eq!(event_types(&gw, &acme).await, ["CONNECTION_REQUEST_ACCEPTED", "MESSAGE_REPLY_RECEIVED"]);

    // Missing, wrong, truncated or another org's token: the same 401, nothing stored.
    let wrong = "0".repeat(64);
    for bad in [bare.clone(), format!("{bare}?secret="), format!("{bare}?secret={wrong}"), format!("{bare}?secret={}", &token[..63]), format!("{bare}?secret={other_token}"), format!("{bare}?token={token}")] {
        rejected(&hr.deliver(&bad, &heyreach::Event::reply(campaign, "https://www.linkedin.com/in/bob", "msg-2", "x")).await.unwrap());
    }
    rejected(&hr.deliver(&format!("http://{}/v1/webhooks/{other_ep}?secret={token}", gw.addr), &reply).await.unwrap());
    assert_eq!((stored(&db, &ep).await, stored(&db, &other_ep).await), ((2, 2), (0, 0)));

    // Registered at the fake HeyReach like the adapter does, delivered from there.
    let hook = json!({"webhookName": "gateway", "webhookUrl": url, "eventType": "MESSAGE_REPLY_RECEIVED", "campaignIds": []});
    fake_call(&format!("{}/webhooks/CreateWebhook", hr.base_url()), &hook).await;
    let sent = hr.deliver_to_registered(&heyreach::Event::reply(campaign, "https://www.linkedin.com/in/cat", "msg-3", "Yes")).await.unwrap();
    accepted(&sent[0].1);
    let other_url = format!("http://{}{other_path}", gw.addr);
    accepted(&hr.deliver(&other_url, &reply).await.unwrap());

    // A rotation shows the new token in the new path once; the old one lasts the grace period.
    let r = gw.req("POST", &format!("/v1/webhook-endpoints/{ep}/rotate")).token(&acme).json(&json!({"grace_seconds": 0})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_token = r.json["secret"].as_str().unwrap().to_string();
    assert_eq!(r.json["path"], format!("/v1/webhooks/{ep}?secret={new_token}"));
    let rotated = heyreach::Event::reply(campaign, "https://www.linkedin.com/in/dan", "msg-4", "Later");
    rejected(&hr.deliver(&url, &rotated).await.unwrap());
    let last = accepted(&hr.deliver(&format!("{bare}?secret={new_token}"), &rotated).await.unwrap());

    // The token appears in no log line: not the access lines, not the rejections.
    let logs = logs_after(&gw, &last).await;
    assert!(logs.contains(&first) && logs.contains("webhook_rejected"), "the log has the deliveries");
    for t in [&token, &other_token, &wrong, &new_token] {
        assert!(!logs.contains(t.as_str()), "a URL token was logged");
    }
    assert!(!logs.contains("secret="), "a query string was logged");
}
