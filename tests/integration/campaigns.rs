//! The campaigns API, entitlements and provisioning, and the `provider_sync` runner, against
//! `provider-stub` (a stand-in adapter: it answers by the last segment of the org's
//! configured `base_url`: `ok`, `rate-limited` (429, retry-after 2) or anything else (503)).


use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{assert_error, wait_for, policies_with, Gateway, GatewayOptions, Resp, TestDb};

const STUB: &str = r#"
[plugins.provider-stub]
file = "provider_stub.wasm"

[providers.stub]
route = "provider_stub"
capability = "email_outreach"
base_url = "https://stub.invalid/ok"
verify = "url-token"
max_attempts = 2
retry_base_ms = 20

[providers.stubli]
route = "provider_stub"
capability = "linkedin_outreach"
max_attempts = 2
retry_base_ms = 20

[[route]]
id = "provider_stub"
internal = true
target = "plugin:provider-stub"

[route.grants]
tables = { campaigns = "write" }
"#;

struct Org {
    id: String,
    admin: String,
    member: String,
}

async fn start(db: &TestDb, workers: bool) -> Gateway {
    let mut opts = GatewayOptions::new(db);
    opts.policies = policies_with("stub.toml", STUB);
    if !workers {
        opts.extra_env.push(("GATEWAY_JOB_WORKERS".into(), "0".into()));
    }
    Gateway::start_with(opts).await
}

async fn org(gw: &Gateway, name: &str) -> Org {
    let id = gw.create_org(name, Some("unmetered")).await;
    let lower = name.to_lowercase();
    let (admin, _, _) = gw.create_token(&id, "admin", &format!("admin@{lower}.test")).await;
    let (member, _, _) = gw.create_token(&id, "member", &format!("member@{lower}.test")).await;
    Org { id, admin, member }
}

async fn enable(gw: &Gateway, org: &str, capability: &str, provider: &str) {
    let r = gw
        .req("PUT", &format!("/v1/admin/orgs/{org}/capabilities/{capability}"))
        .token(&gw.super_token)
        .json(&json!({ "provider": provider }))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The org's provider configuration, as the credential admin routes would store it.
async fn configure(pool: &PgPool, org: &str, provider: &str, base_url: &str) {
    sqlx::query(
        "INSERT INTO provider_configs (tenant_id, provider, base_url) VALUES ($1::uuid, $2, $3) \
         ON CONFLICT (tenant_id, provider) DO UPDATE SET base_url = EXCLUDED.base_url",
    )
    .bind(org)
    .bind(provider)
    .bind(base_url)
    .execute(pool)
    .await
    .unwrap();
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn post(gw: &Gateway, token: &str, path: &str, body: Value) -> Resp {
    gw.req("POST", path).token(token).json(&body).send().await
}

async fn get(gw: &Gateway, token: &str, path: &str) -> Resp {
    gw.req("GET", path).token(token).send().await
}

/// The payloads of the org's sync jobs, oldest first.
async fn job_payloads(pool: &PgPool, org: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT payload FROM jobs WHERE tenant_id = $1::uuid AND kind = 'provider_sync' ORDER BY created_at, id")
        .bind(org)
        .fetch_all(pool)
        .await
        .unwrap()
}


/// `(status, attempts)` of a job.
async fn job_state(pool: &PgPool, job: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM jobs WHERE id = $1::uuid").bind(job).fetch_one(pool).await.unwrap()
}

async fn latest_job(pool: &PgPool, org: &str) -> String {
    sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM jobs WHERE tenant_id = $1::uuid ORDER BY created_at DESC, id LIMIT 1")
        .bind(org)
        .fetch_one(pool)
        .await
        .unwrap()
        .to_string()
}

/// The stub's calls for a job, as the fields of its log lines (`key=value`, values quoted
/// when they need it).
fn stub_calls(gw: &Gateway, job: &str) -> Vec<std::collections::HashMap<String, String>> {
    gw.stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["text"] == "provider_stub_called")
        .map(|v| fields(v["fields"].as_str().unwrap_or_default()))
        .filter(|f| f.get("job_id").map(String::as_str) == Some(job))
        .collect()
}

fn fields(text: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut rest = text.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (quoted[..end].to_string(), quoted.get(end + 1..).unwrap_or_default())
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(key.trim().to_string(), value);
        rest = next.trim_start();
    }
    out
}

#[tokio::test]
async fn campaign_routes_validate_isolate_and_commit_their_jobs() {
    let db = TestDb::new().await;
    let gw = start(&db, false).await;
    let pool = db.owner_pool().await;
    let a = org(&gw, "Acme").await;
    let b = org(&gw, "Beta").await;

    // No capability yet: nothing can be created, nothing is written.
    let r = post(&gw, &a.admin, "/v1/campaigns", json!({"name": "Q1", "channel": "email"})).await;
    assert_error(&r, 409, "CAPABILITY_NOT_ENABLED");
    assert_eq!(count(&pool, "SELECT count(*) FROM campaigns").await + count(&pool, "SELECT count(*) FROM jobs").await, 0);

    // Entitlements are the super-admin's.
    let cap = format!("/v1/admin/orgs/{}/capabilities/email_outreach", a.id);
    for token in [&a.admin, &a.member] {
        assert_error(&gw.req("PUT", &cap).token(token).json(&json!({"provider": "stub"})).send().await, 403, "FORBIDDEN");
    }
    for (path, body) in [
        (cap.clone(), json!({"provider": "stubli"})),
        (cap.clone(), json!({"provider": "nope"})),
        (cap.clone(), json!({"provider": "stub", "extra": 1})),
        (format!("/v1/admin/orgs/{}/capabilities/fax_outreach", a.id), json!({"provider": "stub"})),
    ] {
        let r = gw.req("PUT", &path).token(&gw.super_token).json(&body).send().await;
        assert_error(&r, 400, "VALIDATION_FAILED");
    }
    let r = gw.req("PUT", &format!("/v1/admin/orgs/{}/capabilities/email_outreach", uuid::Uuid::new_v4())).token(&gw.super_token).json(&json!({"provider": "stub"})).send().await;
    assert_error(&r, 404, "NOT_FOUND");
    assert_eq!(count(&pool, "SELECT count(*) FROM org_capabilities").await, 0);
    enable(&gw, &a.id, "email_outreach", "stub").await;
    enable(&gw, &b.id, "email_outreach", "stub").await;
    let r = get(&gw, &gw.super_token, &format!("/v1/admin/orgs/{}/capabilities", a.id)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["capabilities"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["capabilities"][0]["provider"], "stub");

    // Bad bodies: 400 with the field, nothing written.
    for (body, field) in [
        (json!({"name": "Q1", "channel": "email", "org_id": a.id}), "org_id"),
        (json!({"name": "Q1", "channel": "email", "provider": "x"}), "provider"),
        (json!({"name": "  ", "channel": "email"}), "name"),
        (json!({"name": "x".repeat(201), "channel": "email"}), "name"),
        (json!({"name": "Q1", "channel": "fax"}), "channel"),
        (json!({"name": "Q1"}), "channel"),
    ] {
        let r = post(&gw, &a.admin, "/v1/campaigns", body.clone()).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert_eq!(r.json["details"][0]["field"], field, "{body}: {}", r.text);
    }
    // The linkedin capability is not enabled for A.
    assert_error(&post(&gw, &a.admin, "/v1/campaigns", json!({"name": "Q1", "channel": "linkedin"})).await, 409, "CAPABILITY_NOT_ENABLED");
    assert_error(&post(&gw, &a.member, "/v1/campaigns", json!({"name": "Q1", "channel": "email"})).await, 403, "FORBIDDEN");
    assert_eq!(count(&pool, "SELECT count(*) FROM campaigns").await + count(&pool, "SELECT count(*) FROM jobs").await, 0);

    // Created: the row and its job committed together.
    let r = post(&gw, &a.admin, "/v1/campaigns", json!({"name": " Q1 outreach ", "channel": "email"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.json["campaign_id"].as_str().unwrap().to_string();
    assert_eq!(r.json["name"], "Q1 outreach");
    assert_eq!((r.json["provider"].as_str(), r.json["status"].as_str(), r.json["sync_status"].as_str()), (Some("stub"), Some("draft"), Some("pending")));
    assert_eq!(job_payloads(&pool, &a.id).await, vec![json!({"op": "create_campaign", "provider": "stub", "campaign_id": c})]);
    let (max_attempts, base, status, ref_id): (i32, i32, String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT max_attempts, retry_base_ms, status, ref_id FROM jobs WHERE tenant_id = $1::uuid").bind(&a.id).fetch_one(&pool).await.unwrap();
    assert_eq!((max_attempts, base, status.as_str(), ref_id.map(|u| u.to_string())), (2, 20, "pending", Some(c.clone())));
    let r = post(&gw, &b.admin, "/v1/campaigns", json!({"name": "B's", "channel": "email"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cb = r.json["campaign_id"].as_str().unwrap().to_string();

    // Members read; each org sees its own.
    let r = get(&gw, &a.member, "/v1/campaigns").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<&str> = r.json["campaigns"].as_array().unwrap().iter().map(|c| c["campaign_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![c.as_str()]);
    assert_eq!(get(&gw, &a.member, &format!("/v1/campaigns/{c}")).await.json["campaign_id"], c.as_str());

    // Sequences: every save a new version.
    let seq = format!("/v1/campaigns/{c}/sequence");
    let r = get(&gw, &a.member, &seq).await;
    assert_eq!((r.json["version"].clone(), r.json["steps"].clone()), (json!(0), json!([])), "{}", r.text);
    for (body, field) in [
        (json!({"steps": []}), "steps"),
        (json!({"steps": [{"body": "Hi"}]}), "steps[0].subject"),
        (json!({"steps": [{"subject": "Hi", "body": ""}]}), "steps[0].body"),
        (json!({"steps": [{"subject": "Hi", "body": "x", "delay_days": 400}]}), "steps[0].delay_days"),
        (json!({"steps": [{"subject": "Hi", "body": "x", "wait": 1}]}), "steps[0].wait"),
    ] {
        let r = post(&gw, &a.admin, &seq, body.clone()).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert_eq!(r.json["details"][0]["field"], field, "{body}: {}", r.text);
    }
    assert_error(&post(&gw, &a.member, &seq, json!({"steps": [{"subject": "Hi", "body": "x"}]})).await, 403, "FORBIDDEN");
    let steps = json!({"steps": [{"subject": "Hello {{first_name}}", "body": "Hi", "delay_days": 0}, {"body": "Following up", "delay_days": 3}]});
    let r = post(&gw, &a.admin, &seq, steps.clone()).await;
    assert_eq!((r.status, r.json["version"].clone()), (201, json!(1)), "{}", r.text);
    let r = post(&gw, &a.admin, &seq, steps).await;
    assert_eq!((r.status, r.json["version"].clone()), (201, json!(2)), "{}", r.text);
    assert_eq!(r.json["steps"][1], json!({"seq_number": 2, "subject": null, "body": "Following up", "delay_days": 3}));
    assert_eq!(get(&gw, &a.member, &seq).await.json["version"], 2);
    assert_eq!(get(&gw, &a.member, &format!("/v1/campaigns/{c}")).await.json["sequence_version"], 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM campaign_sequences").await, 2);

    // Leads: validated as a whole, deduplicated by identity.
    let leads = format!("/v1/campaigns/{c}/leads");
    let many: Vec<Value> = (0..1001).map(|i| json!({"email": format!("l{i}@example.com")})).collect();
    for (body, field) in [
        (json!({"leads": []}), "leads"),
        (json!({"leads": many}), "leads"),
        (json!({"leads": [{"email": "ok@example.com"}, {"email": "not-an-email"}]}), "leads[1].email"),
        (json!({"leads": [{"first_name": "Ann"}]}), "leads[0].email"),
        (json!({"leads": [{"email": "a@example.com", "profile_url": "https://example.com/ann"}]}), "leads[0].profile_url"),
        (json!({"leads": [{"email": "a@example.com", "custom_fields": {"nested": {"x": 1}}}]}), "leads[0].custom_fields.nested"),
        (json!({"leads": [{"email": "a@example.com", "phone": "1"}]}), "leads[0].phone"),
    ] {
        let r = post(&gw, &a.admin, &leads, body.clone()).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert_eq!(r.json["details"][0]["field"], field, "{}", r.text);
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM campaign_leads").await, 0);
    let r = post(
        &gw,
        &a.admin,
        &leads,
        json!({"leads": [
            {"email": " Ann@Example.com ", "first_name": "Ann", "company": "Acme", "custom_fields": {"tier": "gold", "seats": 5}},
            {"email": "bob@example.com"},
            {"email": "ann@example.COM"},
        ]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!((r.json["added"].clone(), r.json["duplicates"].clone()), (json!(2), json!(1)));
    assert_eq!(r.json["leads"][0]["email"], "ann@example.com");
    assert_eq!(r.json["leads"][0]["custom_fields"], json!({"tier": "gold", "seats": 5}));
    let ann = r.json["leads"][0]["lead_id"].as_str().unwrap().to_string();
    let bob = r.json["leads"][1]["lead_id"].as_str().unwrap().to_string();
    let r = post(&gw, &a.admin, &leads, json!({"leads": [{"email": "BOB@example.com"}, {"email": "cy@example.com"}]})).await;
    assert_eq!((r.json["added"].clone(), r.json["duplicates"].clone()), (json!(1), json!(1)), "{}", r.text);
    let cy = r.json["leads"][0]["lead_id"].as_str().unwrap().to_string();
    let r = get(&gw, &a.member, &leads).await;
    assert_eq!(r.json["leads"].as_array().unwrap().len(), 3, "{}", r.text);
    let payloads = job_payloads(&pool, &a.id).await;
    assert_eq!(payloads[payloads.len() - 2], json!({"op": "add_leads", "provider": "stub", "campaign_id": c, "lead_ids": [ann, bob]}));
    assert_eq!(payloads[payloads.len() - 1], json!({"op": "add_leads", "provider": "stub", "campaign_id": c, "lead_ids": [cy]}));

    // Lead actions.
    let action = |lead: &str, what: &str| format!("/v1/campaigns/{c}/leads/{lead}/{what}");
    assert_error(&post(&gw, &a.member, &action(&ann, "pause"), json!({})).await, 403, "FORBIDDEN");
    let r = post(&gw, &a.admin, &action(&ann, "pause"), json!({})).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("paused")), "{}", r.text);
    assert_eq!(post(&gw, &a.admin, &action(&ann, "resume"), json!({})).await.json["status"], "active");
    assert_eq!(post(&gw, &a.admin, &action(&bob, "unsubscribe"), json!({})).await.json["status"], "unsubscribed");
    assert_error(&post(&gw, &a.admin, &action(&bob, "resume"), json!({})).await, 409, "LEAD_UNSUBSCRIBED");
    assert_error(&post(&gw, &a.admin, &action(&uuid::Uuid::new_v4().to_string(), "pause"), json!({})).await, 404, "NOT_FOUND");
    assert_eq!(job_payloads(&pool, &a.id).await.last().unwrap(), &json!({"op": "lead_action", "provider": "stub", "campaign_id": c, "lead_id": bob, "action": "unsubscribe"}));

    // Replies, messages and analytics come from what adapters store.
    sqlx::query(
        "INSERT INTO campaign_messages (tenant_id, campaign_id, lead_id, direction, seq_number, subject, body, event_key) VALUES \
         ($1::uuid, $2::uuid, $3::uuid, 'outbound', 1, 'Hello', 'Hi', 'k1'), \
         ($1::uuid, $2::uuid, $3::uuid, 'inbound', 1, 'Re: Hello', 'Sure', 'k2')",
    )
    .bind(&a.id)
    .bind(&c)
    .bind(&ann)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO campaign_activity (tenant_id, campaign_id, seq_number, kind, event_key) \
         SELECT $1::uuid, $2::uuid, s, k, k || s || n FROM (VALUES \
           (1, 'message.sent', 3), (1, 'message.opened', 2), (1, 'link.clicked', 1), (1, 'reply.received', 1), \
           (2, 'message.sent', 2), (2, 'bounced', 1)) AS v(s, k, c), generate_series(1, c) n",
    )
    .bind(&a.id)
    .bind(&c)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO campaign_activity (tenant_id, campaign_id, kind, event_key) VALUES ($1::uuid, $2::uuid, 'unsubscribed', 'u1')")
        .bind(&a.id)
        .bind(&c)
        .execute(&pool)
        .await
        .unwrap();
    let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}/replies")).await;
    let replies = r.json["replies"].as_array().unwrap();
    assert_eq!((replies.len(), replies[0]["body"].as_str(), replies[0]["direction"].as_str()), (1, Some("Sure"), Some("inbound")), "{}", r.text);
    let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}/leads/{ann}/messages")).await;
    assert_eq!(r.json["messages"].as_array().unwrap().len(), 2, "{}", r.text);
    assert_eq!(get(&gw, &a.member, &format!("/v1/campaigns/{c}/leads/{cy}/messages")).await.json["messages"], json!([]));
    let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}/analytics")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({
            "steps": [
                {"seq_number": 1, "sent": 3, "opened": 2, "clicked": 1, "replied": 1, "bounced": 0, "unsubscribed": 0},
                {"seq_number": 2, "sent": 2, "opened": 0, "clicked": 0, "replied": 0, "bounced": 1, "unsubscribed": 0},
            ],
            "totals": {"sent": 5, "opened": 2, "clicked": 1, "replied": 1, "bounced": 1, "unsubscribed": 1},
        })
    );

    // Inboxes: the org's own.
    sqlx::query("INSERT INTO inboxes (tenant_id, provider, provider_id, address, name, status) VALUES ($1::uuid, 'stub', '17', 'sales@acme.test', 'Sales', 'active')")
        .bind(&a.id)
        .execute(&pool)
        .await
        .unwrap();
    let r = get(&gw, &a.member, "/v1/inboxes").await;
    assert_eq!((r.json["inboxes"].as_array().map(Vec::len), r.json["inboxes"][0]["address"].as_str()), (Some(1), Some("sales@acme.test")), "{}", r.text);
    assert_eq!(get(&gw, &b.member, "/v1/inboxes").await.json["inboxes"], json!([]));

    // Another org's ids are not found, at every route, and change nothing.
    let jobs_before = count(&pool, "SELECT count(*) FROM jobs").await;
    let l = &ann;
    for (method, path, body) in [
        ("GET", format!("/v1/campaigns/{c}"), None),
        ("POST", format!("/v1/campaigns/{c}/status"), Some(json!({"status": "paused"}))),
        ("GET", format!("/v1/campaigns/{c}/sequence"), None),
        ("POST", format!("/v1/campaigns/{c}/sequence"), Some(json!({"steps": [{"subject": "x", "body": "y"}]}))),
        ("GET", format!("/v1/campaigns/{c}/leads"), None),
        ("POST", format!("/v1/campaigns/{c}/leads"), Some(json!({"leads": [{"email": "z@example.com"}]}))),
        ("POST", format!("/v1/campaigns/{c}/leads/{l}/pause"), Some(json!({}))),
        ("POST", format!("/v1/campaigns/{c}/leads/{l}/resume"), Some(json!({}))),
        ("POST", format!("/v1/campaigns/{c}/leads/{l}/unsubscribe"), Some(json!({}))),
        ("GET", format!("/v1/campaigns/{c}/leads/{l}/messages"), None),
        ("GET", format!("/v1/campaigns/{c}/replies"), None),
        ("GET", format!("/v1/campaigns/{c}/analytics"), None),
        // A's lead under B's campaign.
        ("POST", format!("/v1/campaigns/{cb}/leads/{l}/pause"), Some(json!({}))),
        ("GET", format!("/v1/campaigns/{cb}/leads/{l}/messages"), None),
    ] {
        let mut req = gw.req(method, &path).token(&b.admin);
        if let Some(body) = &body {
            req = req.json(body);
        }
        assert_error(&req.send().await, 404, "NOT_FOUND");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, jobs_before);
    assert_eq!(get(&gw, &a.member, &format!("/v1/campaigns/{c}")).await.json["status"], "draft");

    // Status: members cannot; stopped is final.
    let status = format!("/v1/campaigns/{c}/status");
    assert_error(&post(&gw, &a.member, &status, json!({"status": "active"})).await, 403, "FORBIDDEN");
    for bad in [json!({"status": "completed"}), json!({"status": "active", "at": 1}), json!({})] {
        assert_error(&post(&gw, &a.admin, &status, bad).await, 400, "VALIDATION_FAILED");
    }
    let r = post(&gw, &a.admin, &status, json!({"status": "active"})).await;
    assert_eq!((r.status, r.json["status"].as_str()), (200, Some("active")), "{}", r.text);
    assert_eq!(job_payloads(&pool, &a.id).await.last().unwrap(), &json!({"op": "set_status", "provider": "stub", "campaign_id": c, "status": "active"}));
    assert_eq!(post(&gw, &a.admin, &status, json!({"status": "stopped"})).await.json["status"], "stopped");
    let jobs_before = count(&pool, "SELECT count(*) FROM jobs").await;
    assert_error(&post(&gw, &a.admin, &status, json!({"status": "active"})).await, 409, "CAMPAIGN_STOPPED");
    assert_error(&post(&gw, &a.admin, &seq, json!({"steps": [{"subject": "x", "body": "y"}]})).await, 409, "CAMPAIGN_STOPPED");
    assert_error(&post(&gw, &a.admin, &leads, json!({"leads": [{"email": "z@example.com"}]})).await, 409, "CAMPAIGN_STOPPED");
    assert_error(&post(&gw, &a.admin, &action(&ann, "pause"), json!({})).await, 409, "CAMPAIGN_STOPPED");
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, jobs_before);

    // A capability withdrawn: writes to B's campaign are refused, reads still work.
    sqlx::query("DELETE FROM org_capabilities WHERE tenant_id = $1::uuid").bind(&b.id).execute(&pool).await.unwrap();
    assert_error(&post(&gw, &b.admin, &format!("/v1/campaigns/{cb}/status"), json!({"status": "active"})).await, 409, "CAPABILITY_NOT_ENABLED");
    assert_eq!(get(&gw, &b.member, &format!("/v1/campaigns/{cb}")).await.status, 200);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, jobs_before);
}

#[tokio::test]
async fn sync_jobs_run_the_adapter_defer_on_429_and_mark_dead_targets_failed() {
    let db = TestDb::new().await;
    let gw = start(&db, true).await;
    let pool = db.owner_pool().await;
    let a = org(&gw, "Acme").await;
    enable(&gw, &a.id, "email_outreach", "stub").await;
    configure(&pool, &a.id, "stub", "https://stub.invalid/ok").await;

    // The adapter runs: its write (provider_id, synced) commits with the job's completion.
    let r = post(&gw, &a.admin, "/v1/campaigns", json!({"name": "Q1", "channel": "email"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.json["campaign_id"].as_str().unwrap().to_string();
    let synced = wait_for("campaign synced", &gw, || async {
        let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}")).await;
        (r.json["sync_status"] == "synced").then_some(r.json)
    })
    .await;
    assert_eq!(synced["provider_id"], format!("stub-{c}"));
    let job = latest_job(&pool, &a.id).await;
    assert_eq!(job_state(&pool, &job).await, ("done".into(), 1));
    let calls = stub_calls(&gw, &job);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    for (k, v) in [("op", "create_campaign"), ("attempt", "1"), ("max_attempts", "2"), ("content_type", "application/json"), ("keys", "base_url,campaign_id,op,provider")] {
        assert_eq!(call.get(k).map(String::as_str), Some(v), "{k}: {call:?}");
    }
    assert_eq!(count(&pool, &format!("SELECT count(*) FROM agent_runs WHERE job_id = '{job}' AND status = 'succeeded'")).await, 1);

    // A 429 with retry-after puts the job back for then, without using up an attempt.
    configure(&pool, &a.id, "stub", "https://stub.invalid/rate-limited").await;
    assert_eq!(post(&gw, &a.admin, &format!("/v1/campaigns/{c}/status"), json!({"status": "active"})).await.status, 200);
    let job = latest_job(&pool, &a.id).await;
    let (error, wait_s, attempts): (Option<String>, f64, i32) = wait_for("a deferral", &gw, || async {
        sqlx::query_as(
            "SELECT r.error, extract(epoch FROM j.run_at - now())::float8, j.attempts FROM agent_runs r \
             JOIN jobs j ON j.id = r.job_id WHERE r.job_id = $1::uuid AND r.status = 'failed' AND j.status = 'pending'",
        )
        .bind(&job)
        .fetch_optional(&pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(error.as_deref(), Some("rate limited; retry after 2s"));
    assert!(wait_s > 0.0 && wait_s <= 2.0, "next run in {wait_s}s");
    assert_eq!(attempts, 0);
    // The provider recovers: the same job finishes on its first counted attempt.
    configure(&pool, &a.id, "stub", "https://stub.invalid/ok").await;
    wait_for("the deferred job done", &gw, || async { (job_state(&pool, &job).await.0 == "done").then_some(()) }).await;
    assert_eq!(job_state(&pool, &job).await, ("done".into(), 1));
    // Every call was its first attempt: the 429s used none up.
    let calls = stub_calls(&gw, &job);
    assert!(calls.len() >= 2 && calls.iter().all(|c| c["attempt"] == "1"), "{calls:?}");

    // Failures are retried with backoff, then the job is dead and its target failed.
    configure(&pool, &a.id, "stub", "https://stub.invalid/down").await;
    let r = post(&gw, &a.admin, &format!("/v1/campaigns/{c}/sequence"), json!({"steps": [{"subject": "Hi", "body": "x"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let seq = wait_for("sequence failed", &gw, || async {
        let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}/sequence")).await;
        (r.json["sync_status"] == "failed").then_some(r.json)
    })
    .await;
    assert_eq!(seq["sync_error"], "provider-stub answered 503: STUB_DOWN");
    let job = latest_job(&pool, &a.id).await;
    assert_eq!(job_state(&pool, &job).await, ("dead".into(), 2));
    let r = post(&gw, &a.admin, &format!("/v1/campaigns/{c}/leads"), json!({"leads": [{"email": "ann@example.com"}]})).await;
    let lead = r.json["leads"][0]["lead_id"].as_str().unwrap().to_string();
    wait_for("lead failed", &gw, || async {
        let r = get(&gw, &a.member, &format!("/v1/campaigns/{c}/leads")).await;
        (r.json["leads"][0]["sync_status"] == "failed").then_some(())
    })
    .await;
    assert_eq!(get(&gw, &a.member, &format!("/v1/campaigns/{c}/leads")).await.json["leads"][0]["lead_id"], lead.as_str());

    // A provider the org has not configured: the job dies with that reason.
    sqlx::query("DELETE FROM provider_configs").execute(&pool).await.unwrap();
    let r = post(&gw, &a.admin, "/v1/campaigns", json!({"name": "Q2", "channel": "email"})).await;
    let c2 = r.json["campaign_id"].as_str().unwrap().to_string();
    let failed = wait_for("campaign failed", &gw, || async {
        let r = get(&gw, &a.member, &format!("/v1/campaigns/{c2}")).await;
        (r.json["sync_status"] == "failed").then_some(r.json)
    })
    .await;
    assert!(failed["sync_error"].as_str().unwrap().starts_with("PROVIDER_NOT_CONFIGURED"), "{failed}");
}

#[tokio::test]
async fn provisioning_creates_one_endpoint_and_a_pending_job() {
    let db = TestDb::new().await;
    let gw = start(&db, true).await;
    let pool = db.owner_pool().await;
    let a = org(&gw, "Acme").await;
    let prov = format!("/v1/admin/orgs/{}/provisioning/email_outreach", a.id);

    assert_error(&post(&gw, &a.admin, &prov, json!({})).await, 403, "FORBIDDEN");
    assert_error(&post(&gw, &gw.super_token, &prov, json!({})).await, 404, "CAPABILITY_NOT_ENABLED");
    assert_error(&get(&gw, &gw.super_token, &prov).await, 404, "CAPABILITY_NOT_ENABLED");
    assert_error(&post(&gw, &gw.super_token, &format!("/v1/admin/orgs/{}/provisioning/email_outreach", uuid::Uuid::new_v4()), json!({})).await, 404, "NOT_FOUND");
    enable(&gw, &a.id, "email_outreach", "stub").await;
    assert_error(&post(&gw, &gw.super_token, &prov, json!({})).await, 409, "PROVIDER_NOT_CONFIGURED");
    assert_error(&post(&gw, &gw.super_token, &prov, json!({"force": true})).await, 400, "VALIDATION_FAILED");
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_endpoints").await + count(&pool, "SELECT count(*) FROM jobs").await, 0);
    assert_error(&get(&gw, &gw.super_token, &prov).await, 404, "NOT_FOUND");

    configure(&pool, &a.id, "stub", "https://stub.invalid/ok").await;
    let r = post(&gw, &gw.super_token, &prov, json!({})).await;
    assert_eq!((r.status, r.json["status"].as_str()), (202, Some("pending")), "{}", r.text);
    let job = r.json["job_id"].as_str().unwrap().to_string();
    let endpoint = r.json["webhook_endpoint_id"].as_str().unwrap().to_string();
    let r = get(&gw, &gw.super_token, &prov).await;
    assert_eq!((r.json["status"].as_str(), r.json["provider"].as_str(), r.json["webhook_endpoint_id"].as_str()), (Some("pending"), Some("stub"), Some(endpoint.as_str())), "{}", r.text);
    let (scheme, secrets): (String, i64) = sqlx::query_as(
        "SELECT e.scheme, (SELECT count(*) FROM webhook_secrets s WHERE s.endpoint_id = e.id) FROM webhook_endpoints e WHERE e.tenant_id = $1::uuid",
    )
    .bind(&a.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((scheme.as_str(), secrets), ("url-token", 1));
    assert_eq!(job_payloads(&pool, &a.id).await, vec![json!({"op": "provision", "provider": "stub", "capability": "email_outreach", "webhook_endpoint_id": endpoint})]);

    // The adapter gets the URL to register, with the endpoint's secret in it (never stored so).
    wait_for("provision job done", &gw, || async { (job_state(&pool, &job).await.0 == "done").then_some(()) }).await;
    let calls = stub_calls(&gw, &job);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["op"], "provision");
    assert_eq!(calls[0]["webhook_url"], format!("http://{}/v1/webhooks/{endpoint}", gw.addr));
    assert_eq!(calls[0]["keys"], "base_url,capability,op,provider,webhook_endpoint_id,webhook_url");
    assert_eq!(calls[0]["secret_len"], "64");

    // Again: the same endpoint, a new job; a dead one marks the provisioning failed.
    configure(&pool, &a.id, "stub", "https://stub.invalid/down").await;
    let r = post(&gw, &gw.super_token, &prov, json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["webhook_endpoint_id"], endpoint.as_str());
    assert_ne!(r.json["job_id"], job.as_str());
    assert_eq!(count(&pool, "SELECT count(*) FROM webhook_endpoints").await, 1);
    let failed = wait_for("provisioning failed", &gw, || async {
        let r = get(&gw, &gw.super_token, &prov).await;
        (r.json["status"] == "failed").then_some(r.json)
    })
    .await;
    assert_eq!(failed["reason"], "provider-stub answered 503: STUB_DOWN");
}
