//! Provider credentials a plugin can use but never read (docs/providers.md): the `contract-probe`
//! plugin drives `outbound-http` at loopback servers that echo every request they get (request
//! line with its query, headers, body) in their answer's body and in a response header. The
//! servers see the key; the plugin, the gateway's logs and the admin API's answers never do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, TestDb};

/// A loopback server that records every request and echoes it whole.
struct Echo {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    async fn start() -> Echo {
        use http_body_util::BodyExt;
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
                            let mut head = format!("{} {} HTTP/1.1", req.method(), req.uri());
                            for (k, v) in req.headers() {
                                head.push_str(&format!(" | {k}: {}", v.to_str().unwrap_or("?")));
                            }
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let whole = format!("{head}\n\n{}", String::from_utf8_lossy(&body));
                            log.lock().unwrap().push(whole.clone());
                            let resp = http::Response::builder().header("x-echo", head).body(whole).unwrap();
                            Ok::<_, std::convert::Infallible>(resp.map(|s| http_body_util::Full::new(bytes::Bytes::from(s))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Echo { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Three adapters' providers (query key, header key, a paced one) and a probe route that may
/// use their credentials, and reach `other` through its hosts allowlist.
fn policy(other: &Echo) -> String {
    format!(
        r#"
[plugins.contract-probe]
file = "contract_probe.wasm"
version = "probe-1"

[providers.fakeq]
route = "provider_fake"
base_url = "https://api.fakeq.example/v1"
[providers.fakeh]
route = "provider_fake"
[providers.fakep]
route = "provider_fake"
rate = "1/h"
burst = 2

[[route]]
id = "provider_fake"
internal = true
target = "plugin:contract-probe"

[[route]]
id = "credentials.probe"
method = "POST"
path = "/v1/credentials-probe"
target = "plugin:contract-probe"
roles = ["admin"]
[route.sandbox]
cpu_ms = 1000
timeout_ms = 10000
[route.grants]
hosts = [{{ url = "http://{}", allow_private = true }}]
http_timeout_ms = 3000
credentials = [
  {{ provider = "fakeq", name = "api_key", inject = "query:api_key" }},
  {{ provider = "fakeh", name = "api_key", inject = "header:X-API-KEY" }},
  {{ provider = "fakep", name = "token", inject = "header:x-token" }},
]
"#,
        other.addr
    )
}

/// Keys with characters that percent-encoding changes, so redaction must find every form.
const KEY_AQ: &str = "sk_A/q+1=key_alpha";
const KEY_AH: &str = "hk_A-header_bravo";
const KEY_BQ: &str = "sk_B/q+2=key_charlie";
const KEY_AP: &str = "pk_A_paced_delta";
const WEBHOOK: &str = "whk_A_webhook_echo";

/// A key as the host escapes it in a query (unreserved characters kept).
fn query_form(key: &str) -> String {
    key.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Every spelling of a key a leak could take.
fn forms(key: &str) -> Vec<String> {
    vec![
        key.to_string(),
        query_form(key),
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string(),
        form_urlencoded::byte_serialize(key.as_bytes()).collect(),
    ]
}

#[track_caller]
fn assert_no_key(text: &str, keys: &[&str], what: &str) {
    for k in keys {
        for f in forms(k) {
            assert!(!text.contains(&f), "{what} contains a key ({f}): {text}");
        }
    }
}

struct Setup {
    gw: Gateway,
    _db: TestDb,
    q: Echo,
    h: Echo,
    p: Echo,
    other: Echo,
    org_a: String,
    a: String,
    org_b: String,
    b: String,
    org_c: String,
    c: String,
}

async fn start(allow_private: bool) -> Setup {
    let (q, h, p, other) = (Echo::start().await, Echo::start().await, Echo::start().await, Echo::start().await);
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("credentials.toml", &policy(&other));
    if allow_private {
        opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    }
    let gw = Gateway::start_with(opts).await;
    let org_a = gw.create_org("A", Some("unmetered")).await;
    let org_b = gw.create_org("B", Some("unmetered")).await;
    let org_c = gw.create_org("C", Some("unmetered")).await;
    let (a, _, _) = gw.create_token(&org_a, "admin", "a@a.test").await;
    let (b, _, _) = gw.create_token(&org_b, "admin", "b@b.test").await;
    let (c, _, _) = gw.create_token(&org_c, "admin", "c@c.test").await;
    Setup { gw, _db: db, q, h, p, other, org_a, a, org_b, b, org_c, c }
}

impl Setup {
    async fn put(&self, org: &str, provider: &str, body: Value) -> crate::harness::Resp {
        self.gw.req("PUT", &format!("/v1/admin/orgs/{org}/providers/{provider}")).token(&self.gw.super_token).json(&body).send().await
    }

    async fn get(&self, path: &str) -> crate::harness::Resp {
        self.gw.req("GET", path).token(&self.gw.super_token).send().await
    }

    /// Runs probe steps as `token`; the whole answer (what the plugin saw, as it reports it).
    async fn probe(&self, token: &str, steps: Value) -> crate::harness::Resp {
        let r = self.gw.req("POST", "/v1/credentials-probe").token(token).json(&json!({ "steps": steps })).send().await;
        assert_eq!(r.status, 200, "{}", r.text);
        r
    }
}

fn http_step(method: &str, url: String, headers: Value) -> Value {
    json!({"http": {"method": method, "url": url, "headers": headers, "body": "payload"}})
}

#[tokio::test]
async fn a_granted_credential_reaches_its_provider_and_never_the_plugin_the_logs_or_the_api() {
    let s = start(true).await;
    let r = s
        .put(&s.org_a, "fakeq", json!({"credentials": {"api_key": KEY_AQ}, "base_url": s.q.url("/api/v1"), "webhook_secret": WEBHOOK}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["provider"], "fakeq");
    assert_eq!(r.json["configured"], true);
    assert_eq!(r.json["base_url"], s.q.url("/api/v1"));
    assert_eq!(r.json["credentials"], json!(["api_key"]));
    assert_eq!(r.json["webhook_secret"], true);
    assert!(r.json["updated_at"].is_string());
    assert_no_key(&r.text, &[KEY_AQ, WEBHOOK], "the PUT answer");
    let r = s.put(&s.org_a, "fakeh", json!({"credentials": {"api_key": KEY_AH}, "base_url": s.h.url("")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.put(&s.org_b, "fakeq", json!({"credentials": {"api_key": KEY_BQ}, "base_url": s.q.url("/api/v1")})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Org A: the query key replaces the plugin's own value, the header key replaces the
    // plugin's header, and the allowlisted origin that is no provider's gets nothing.
    let r = s
        .probe(
            &s.a,
            json!([
                http_step("GET", s.q.url("/api/v1/campaigns?api_key=plugin-value&limit=5"), json!({"x-api-key": "plugin-header"})),
                http_step("POST", s.h.url("/api/leads"), json!({"X-API-KEY": "plugin-value", "x-other": "1"})),
                http_step("GET", s.other.url("/elsewhere?x=1"), json!({})),
            ]),
        )
        .await;
    let results = r.json["results"].as_array().unwrap();
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res["ok"]["status"], 200, "step {i}: {res}");
    }
    let (q_seen, h_seen, other_seen) = (s.q.seen(), s.h.seen(), s.other.seen());
    assert_eq!((q_seen.len(), h_seen.len(), other_seen.len()), (1, 1, 1));
    let encoded_aq = query_form(KEY_AQ);
    assert_eq!(encoded_aq, "sk_A%2Fq%2B1%3Dkey_alpha");
    assert!(q_seen[0].starts_with(&format!("GET /api/v1/campaigns?limit=5&api_key={encoded_aq} HTTP/1.1")), "{}", q_seen[0]);
    assert!(!q_seen[0].contains("plugin-value"), "{}", q_seen[0]);
    // A query credential does not also go into a header; the plugin's header is its own business.
    assert!(q_seen[0].contains("x-api-key: plugin-header"), "{}", q_seen[0]);
    assert!(h_seen[0].contains(&format!("x-api-key: {KEY_AH}")), "{}", h_seen[0]);
    assert_eq!(h_seen[0].matches("x-api-key:").count(), 1, "{}", h_seen[0]);
    assert!(!h_seen[0].contains("plugin-value") && h_seen[0].contains("x-other: 1"), "{}", h_seen[0]);
    assert_no_key(&other_seen[0], &[KEY_AQ, KEY_AH, KEY_BQ], "the other origin's request");
    // What the plugin saw: the echo, with every form of the key redacted, body and header.
    assert_no_key(&r.text, &[KEY_AQ, KEY_AH, KEY_BQ, WEBHOOK], "the plugin's answer");
    let q_answer = &results[0]["ok"];
    assert!(q_answer["body"].as_str().unwrap().contains("api_key=[redacted]"), "{q_answer}");
    let echo_header = q_answer["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-echo").unwrap()[1].as_str().unwrap();
    assert!(echo_header.contains("api_key=[redacted]"), "{echo_header}");
    assert!(results[1]["ok"]["body"].as_str().unwrap().contains("x-api-key: [redacted]"), "{}", results[1]);

    // Org B's plugin uses B's key, never A's.
    s.probe(&s.b, json!([http_step("GET", s.q.url("/api/v1/campaigns"), json!({}))])).await;
    let q_seen = s.q.seen();
    assert_eq!(q_seen.len(), 2);
    let encoded_bq = query_form(KEY_BQ);
    assert!(q_seen[1].contains(&format!("api_key={encoded_bq}")), "{}", q_seen[1]);
    assert_no_key(&q_seen[1], &[KEY_AQ, KEY_AH], "org B's request");

    // Org C configured nothing: the provider origin is not reachable at all.
    let r = s.probe(&s.c, json!([http_step("GET", s.q.url("/api/v1/campaigns"), json!({}))])).await;
    assert_eq!(r.json["results"][0]["err"], "not-allowed", "{}", r.text);
    assert!(r.json["results"][0]["detail"].as_str().unwrap().contains("provider not configured for this org"), "{}", r.text);
    assert_eq!(s.q.seen().len(), 2);

    // The admin API shows names, never values.
    let one = s.get(&format!("/v1/admin/orgs/{}/providers/fakeq", s.org_a)).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!((one.json["configured"].clone(), one.json["credentials"].clone()), (json!(true), json!(["api_key"])));
    let list = s.get(&format!("/v1/admin/orgs/{}/providers", s.org_a)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> = list.json["providers"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(names, ["fakeh", "fakeq"]);
    assert_no_key(&format!("{}{}", one.text, list.text), &[KEY_AQ, KEY_AH, WEBHOOK], "GET answers");
    // Not configured: said so, with the policy's default base URL.
    let none = s.get(&format!("/v1/admin/orgs/{}/providers/fakeq", s.org_c)).await;
    assert_eq!(none.json, json!({"provider": "fakeq", "configured": false, "base_url": "https://api.fakeq.example/v1",
        "credentials": [], "webhook_secret": false, "updated_at": null}));

    // The keys are sealed at rest.
    let pool = s._db.owner_pool().await;
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM provider_secrets").fetch_all(&pool).await.unwrap();
    assert_eq!(sealed.len(), 4);
    for blob in &sealed {
        assert_no_key(&String::from_utf8_lossy(blob), &[KEY_AQ, KEY_AH, KEY_BQ, WEBHOOK], "a sealed secret");
    }

    // Replacing A's credentials takes effect at once (no stale cache), and DELETE removes them.
    let r = s.put(&s.org_a, "fakeh", json!({"credentials": {"api_key": "hk_A-rotated_foxtrot"}, "base_url": s.h.url("")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.probe(&s.a, json!([http_step("GET", s.h.url("/x"), json!({}))])).await;
    assert!(s.h.seen()[1].contains("x-api-key: hk_A-rotated_foxtrot"), "{}", s.h.seen()[1]);
    let r = s.gw.req("DELETE", &format!("/v1/admin/orgs/{}/providers/fakeh", s.org_a)).token(&s.gw.super_token).send().await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.probe(&s.a, json!([http_step("GET", s.h.url("/x"), json!({}))])).await;
    assert_eq!(r.json["results"][0]["err"], "not-allowed", "{}", r.text);
    assert_eq!(s.h.seen().len(), 2);
    let r = s.gw.req("DELETE", &format!("/v1/admin/orgs/{}/providers/fakeh", s.org_a)).token(&s.gw.super_token).send().await;
    assert_error(&r, 404, "NOT_FOUND");

    // The calls were logged (scheme, host and port), the keys never.
    let logs = format!("{}{}", s.gw.stdout(), s.gw.stderr());
    assert!(logs.contains("provider_call"), "no provider_call line: {logs}");
    assert_no_key(&logs, &[KEY_AQ, KEY_AH, KEY_BQ, WEBHOOK, "hk_A-rotated_foxtrot"], "the gateway's logs");
}

#[tokio::test]
async fn calls_over_the_providers_pace_get_a_429_and_are_not_sent() {
    let s = start(true).await;
    let r = s.put(&s.org_a, "fakep", json!({"credentials": {"token": KEY_AP}, "base_url": s.p.url("")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Burst 2 at 1/h: the third call within the hour is paced.
    let steps: Vec<Value> = (0..3).map(|i| http_step("GET", s.p.url(&format!("/call/{i}")), json!({}))).collect();
    let r = s.probe(&s.a, json!(steps)).await;
    let results = r.json["results"].as_array().unwrap();
    assert_eq!(results[0]["ok"]["status"], 200, "{}", r.text);
    assert_eq!(results[1]["ok"]["status"], 200, "{}", r.text);
    assert_eq!(results[2]["ok"]["status"], 429, "{}", r.text);
    let retry_after = results[2]["ok"]["headers"].as_array().unwrap().iter().find(|h| h[0] == "retry-after").unwrap()[1]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!((1700..=3600).contains(&retry_after), "{retry_after}");
    let seen = s.p.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|x| x.contains(&format!("x-token: {KEY_AP}"))));
    // The pace is per org: B's credential has its own.
    let r = s.put(&s.org_b, "fakep", json!({"credentials": {"token": "pk_B_paced_golf"}, "base_url": s.p.url("")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.probe(&s.b, json!([http_step("GET", s.p.url("/b"), json!({}))])).await;
    assert_eq!(r.json["results"][0]["ok"]["status"], 200, "{}", r.text);
    assert_eq!(s.p.seen().len(), 3);
}

#[tokio::test]
async fn provider_configuration_is_validated_and_private_urls_need_the_operators_switch() {
    let s = start(false).await;
    let put = |org: String, provider: &'static str, body: Value| {
        let s = &s;
        async move { s.put(&org, provider, body).await }
    };
    let key = json!({"api_key": KEY_AQ});
    // A loopback or private base URL is refused without GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS.
    for url in [s.q.url(""), "https://127.0.0.1/api".to_string(), "https://10.1.2.3".to_string(), "https://localhost:8443".to_string()] {
        let r = put(s.org_a.clone(), "fakeq", json!({"credentials": key, "base_url": url})).await;
        assert_error(&r, 400, "PROVIDER_URL_NOT_ALLOWED");
    }
    let r = put(s.org_a.clone(), "fakeq", json!({"credentials": key, "base_url": "https://169.254.169.254/latest"})).await;
    assert_error(&r, 400, "PROVIDER_URL_NOT_ALLOWED");
    // Shapes: VALIDATION_FAILED naming the field.
    for (body, field) in [
        (json!({"credentials": key, "base_url": "https://user:pw@api.example.com"}), "base_url"),
        (json!({"credentials": key, "base_url": "https://api.example.com/v1?key=1"}), "base_url"),
        (json!({"credentials": key, "base_url": "https://api.example.com/v1#x"}), "base_url"),
        (json!({"credentials": key, "base_url": "ftp://api.example.com"}), "base_url"),
        (json!({"credentials": key, "base_url": "/relative"}), "base_url"),
        (json!({"credentials": {}}), "credentials"),
        (json!({"credentials": {"api_key": "short"}}), "credentials.api_key"),
        (json!({"credentials": {"api_key": "has a space in it"}}), "credentials.api_key"),
        (json!({"credentials": {"Api-Key": KEY_AQ}}), "credentials.Api-Key"),
        (json!({"credentials": {"webhook_secret": KEY_AQ}}), "credentials.webhook_secret"),
        (json!({"credentials": {"api_key": 42}}), "credentials.api_key"),
        (json!({"credentials": key, "webhook_secret": "x"}), "webhook_secret"),
        (json!({}), "credentials"),
    ] {
        let r = put(s.org_a.clone(), "fakeq", body.clone()).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert_eq!(r.json["details"][0]["field"], field, "{body}: {}", r.text);
        assert_no_key(&r.text, &[KEY_AQ], "a refusal");
    }
    // No default base URL and none given.
    let r = put(s.org_a.clone(), "fakeh", json!({"credentials": key})).await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert_eq!(r.json["details"][0]["field"], "base_url");
    // Unknown org, undeclared provider: 404.
    let r = put(uuid::Uuid::new_v4().to_string(), "fakeq", json!({"credentials": key, "base_url": "https://203.0.114.9"})).await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = put(s.org_a.clone(), "nope", json!({"credentials": key})).await;
    assert_error(&r, 404, "NOT_FOUND");
    assert_error(&s.get(&format!("/v1/admin/orgs/{}/providers", uuid::Uuid::new_v4())).await, 404, "NOT_FOUND");
    // Tenants cannot reach these routes.
    let r = s.gw.req("GET", &format!("/v1/admin/orgs/{}/providers", s.org_a)).token(&s.a).send().await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Nothing was written by any refusal.
    let list = s.get(&format!("/v1/admin/orgs/{}/providers", s.org_a)).await;
    assert_eq!(list.json, json!({"providers": []}));
    // The policy's public default is accepted (it is checked again on every connection).
    let r = put(s.org_a.clone(), "fakeq", json!({"credentials": key})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["base_url"], "https://api.fakeq.example/v1");
}

#[tokio::test]
async fn a_private_base_url_stored_under_the_switch_is_refused_at_connect_time_without_it() {
    let mut s = start(true).await;
    let r = s.put(&s.org_a, "fakeq", json!({"credentials": {"api_key": KEY_AQ}, "base_url": s.q.url("/api")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.probe(&s.a, json!([http_step("GET", s.q.url("/api/x"), json!({}))])).await;
    assert_eq!(r.json["results"][0]["ok"]["status"], 200, "{}", r.text);
    assert_eq!(s.q.seen().len(), 1);
    // The same database and secret key, without the operator's switch: the stored URL's
    // address is checked again on the connection, and refused.
    s.gw.terminate().await;
    let mut opts = GatewayOptions::new(&s._db);
    opts.data_dir = s.gw.data_dir.clone();
    opts.policies = policies_with("credentials.toml", &policy(&s.other));
    s.gw = Gateway::start_with(opts).await;
    let r = s.probe(&s.a, json!([http_step("GET", s.q.url("/api/x"), json!({}))])).await;
    assert_eq!(r.json["results"][0]["err"], "forbidden-address", "{}", r.text);
    assert_eq!(s.q.seen().len(), 1);
    assert_no_key(&r.text, &[KEY_AQ], "the refusal");
}
