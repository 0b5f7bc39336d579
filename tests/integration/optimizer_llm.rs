//! The `optimizer` plugin and its model (docs/optimizer.md, "The plugin contract"), through
//! the real gateway, PostgreSQL and a fake chat-completions API (`fake_providers::FakeChat`).
//! A test route exposes the plugin with the grants of the internal `optimizer` route
//! (`policies/optimizer.toml`), so a test can send the contract's request body and read the
//! plugin's answer; the job that calls the internal route is the core runner's.
//!
//! What this proves: with provider `openai` configured for the org, the proposals come from
//! the model (source `llm`); the key reaches the model as `authorization: Bearer <key>`, put
//! there by the host, and what the plugin is shown of it is `[redacted]`; the model is sent
//! steps and counts, never a lead's address; a failing model (503, 429, an answer it cannot
//! use) or none configured gives the rules' proposals, with `llm` saying why; another org sees
//! nothing of the campaign; a call-out-only provider gets no webhook endpoint.

use fake_providers::{FakeChat, Fault};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{assert_error, policies_with, Gateway, TestDb};

const KEY: &str = "sk-opt-test-key-0123456789";
const LEAD_EMAIL: &str = "lead-private@leads.example";

/// The internal `optimizer` route's grants on a route a member's token can call.
const TEST_ROUTE: &str = r#"
[[route]]
id = "t_optimizer"
method = "POST"
path = "/v1/test/optimize"
target = "plugin:optimizer"
roles = ["member", "admin"]

[route.sandbox]
memory = "32MiB"
cpu_ms = 2000
timeout_ms = 30000

[route.grants]
tables = { campaigns = "read", campaign_sequences = "read", campaign_step_stats = "read", campaign_optimizations = "read" }
http_timeout_ms = 10000
http_max_response = "1MiB"
credentials = [{ provider = "openai", name = "api_key", inject = "bearer" }]
"#;

async fn optimize(gw: &Gateway, token: &str, body: Value) -> Value {
    let r = gw.req("POST", "/v1/test/optimize").token(token).json(&body).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(KEY), "the plugin saw the key: {}", r.text);
    r.json
}

fn kinds(answer: &Value) -> Vec<(String, String, String)> {
    answer["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("optimization_type"), s("asset_id"), s("source"))
        })
        .collect()
}

#[tokio::test]
async fn the_model_gets_the_key_from_the_host_and_steps_only_and_the_rules_cover_its_failures() {
    let db = TestDb::new().await;
    let chat = FakeChat::start(KEY).await.unwrap();
    chat.echo_authorization(true);
    let mut opts = crate::harness::GatewayOptions::new(&db);
    opts.policies = policies_with("optimizer_test.toml", TEST_ROUTE);
    opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    let (member, _, _) = gw.create_token(&org, "member", "member@acme.test").await;
    let other = gw.create_org("Other", Some("unmetered")).await;
    let (other_token, _, _) = gw.create_token(&other, "admin", "admin@other.test").await;

    // A campaign at version 1: step 1 opened half the time, step 2 a tenth (the rules' and
    // the fake model's pick), a lead whose address must never reach the model.
    let pool = db.owner_pool().await;
    let campaign = Uuid::new_v4().to_string();
    let steps = json!([
        {"seq_number": 1, "subject": "Hello there", "body": "Hi {{first_name}}, a quick idea.", "delay_days": 0},
        {"seq_number": 2, "subject": "Following up", "body": "Did you see my note?", "delay_days": 3},
    ]);
    sqlx::raw_sql(&format!(
        "INSERT INTO campaigns (id, tenant_id, name, channel, provider, status, sequence_version) \
             VALUES ('{campaign}', '{org}', 'Q1', 'email', 'smartlead', 'active', 1);
         INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ('{org}', '{campaign}', 1, '{steps}');
         INSERT INTO campaign_step_stats (tenant_id, campaign_id, seq_number, sent, opened, replied, bounced) VALUES
             ('{org}', '{campaign}', 1, 100, 50, 10, 0), ('{org}', '{campaign}', 2, 100, 10, 0, 1);
         INSERT INTO campaign_leads (id, tenant_id, campaign_id, identity, email, first_name, company) \
             VALUES (gen_random_uuid(), '{org}', '{campaign}', '{LEAD_EMAIL}', '{LEAD_EMAIL}', 'Ann', 'Leadco');"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let llm = json!({"base_url": chat.base_url(), "model": "gpt-4o-mini"});
    let rules = vec![("update_subject".to_string(), "2".to_string(), "rules".to_string())];

    // No model configured: the host sends `llm: null`, the rules answer.
    let a = optimize(&gw, &member, json!({"trigger": "manual", "campaign_id": null, "llm": null})).await;
    assert_eq!((a["llm"].as_str(), a["examined"].as_i64()), (Some("not_configured"), Some(1)));
    assert_eq!(kinds(&a), rules);
    let p = &a["proposals"][0];
    assert_eq!((p["campaign_id"].as_str(), p["base_version"].as_i64(), p["field"].as_str()), (Some(campaign.as_str()), Some(1), Some("subject")));
    assert_eq!((p["asset_type"].as_str(), p["new_value"].as_str()), (Some("sequence_step"), Some("Quick question: Following up")));
    assert!(p["rationale"].as_str().is_some_and(|r| r.contains("10 times in 100 sends")), "{p}");
    // A model named but not configured for the org: the host refuses the call, which sends nothing.
    let a = optimize(&gw, &member, json!({"trigger": "manual", "campaign_id": campaign, "llm": llm})).await;
    assert!(a["llm"].as_str().is_some_and(|l| l.starts_with("failed: not allowed")), "{a}");
    assert_eq!(kinds(&a), rules);
    assert!(chat.calls().is_empty());

    // The super-admin configures the org's model; a webhook endpoint for it is refused.
    let r = gw
        .req("PUT", &format!("/v1/admin/orgs/{org}/providers/openai"))
        .token(&gw.super_token)
        .json(&json!({"credentials": {"api_key": KEY}, "base_url": chat.base_url()}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&admin).json(&json!({"provider": "openai"})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert_eq!(r.json["details"][0]["field"], "provider", "{}", r.text);

    // The model's proposal, through the key the host injected.
    let a = optimize(&gw, &member, json!({"trigger": "manual", "campaign_id": campaign, "llm": llm})).await;
    assert_eq!(a["llm"], "used", "{a}");
    assert_eq!(kinds(&a), [("update_subject".to_string(), "2".to_string(), "llm".to_string())]);
    let p = &a["proposals"][0];
    assert_eq!((p["new_value"].as_str(), p["base_version"].as_i64(), p["field"].as_str()), (Some("Model subject for step 2"), Some(1), Some("subject")));
    let rationale = p["rationale"].as_str().unwrap();
    assert!(rationale.contains("lowest open rate (10%") && rationale.ends_with("authorization seen: Bearer [redacted]"), "{rationale}");
    let calls = chat.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(call.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let body = call.json();
    assert_eq!((body["model"].as_str(), body["temperature"].as_f64()), (Some("gpt-4o-mini"), Some(0.2)));
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
    let user: Value = serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(user["steps"][1]["seq_number"], 2);
    assert_eq!((user["steps"][1]["sent"].as_i64(), user["steps"][1]["opened"].as_i64()), (Some(100), Some(10)));
    let sent = String::from_utf8_lossy(&call.body);
    for private in [LEAD_EMAIL, "leads.example", "Leadco", org.as_str()] {
        assert!(!sent.contains(private), "the model was sent {private}: {sent}");
    }

    // The model failing, each way: the rules, and a short reason (never the answer's body).
    chat.fail_next(1, Fault::Status(503));
    let a = optimize(&gw, &member, json!({"trigger": "schedule", "campaign_id": campaign, "llm": llm})).await;
    assert_eq!(a["llm"], "failed: unavailable (503)");
    assert_eq!(kinds(&a), rules);
    chat.fail_next(1, Fault::RateLimited { retry_after_secs: 20 });
    let a = optimize(&gw, &member, json!({"trigger": "chain", "campaign_id": campaign, "llm": llm})).await;
    assert_eq!(a["llm"], "failed: rate limited (429)");
    assert_eq!(kinds(&a), rules);
    chat.set_content(Some("Here are my thoughts: pause everything. Internal Server Error"));
    let a = optimize(&gw, &member, json!({"trigger": "manual", "campaign_id": null, "llm": llm})).await;
    assert_eq!(a["llm"], "failed: content is not JSON");
    assert_eq!(kinds(&a), rules);
    assert!(!a.to_string().contains("thoughts"), "{a}");
    assert_eq!(chat.calls().len(), 4);

    // Another org: the campaign is not there, by id or by listing; nothing is asked.
    let a = optimize(&gw, &other_token, json!({"trigger": "manual", "campaign_id": campaign, "llm": null})).await;
    assert_eq!((a["examined"].as_i64(), a["proposals"].as_array().map(Vec::len)), (Some(0), Some(0)));
    let a = optimize(&gw, &other_token, json!({"trigger": "manual", "campaign_id": null, "llm": null})).await;
    assert_eq!((a["examined"].as_i64(), a["proposals"].as_array().map(Vec::len)), (Some(0), Some(0)));

    // Bad input is the plugin's 400, before anything is read or asked.
    let r = gw.req("POST", "/v1/test/optimize").token(&member).json(&json!({"campaign_id": "nope", "llm": {"base_url": "ftp://x", "model": "m"}})).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert_eq!(chat.calls().len(), 4);
    assert!(!gw.stderr().contains(KEY) && !gw.stdout().contains(KEY), "the key is in the gateway's log");
}
