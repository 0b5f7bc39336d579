//! The provider contract suite: the shipped adapters (`plugins/smartlead`, `plugins/heyreach`)
//! with the shipped policies, each against its fake provider (`fake-providers`, real HTTP on
//! loopback), through the whole path a client and an operator take: credentials, capability,
//! provisioning, a campaign, leads, status, a reply webhook turned into a reply, a CRM event and
//! analytics; then provider failures (429 pacing, 5xx until dead, 4xx) and the credential's
//! confinement. Both adapters run the same scenario: the contract absorbs their differences.


use fake_providers::heyreach::{self, FakeHeyreach};
use fake_providers::smartlead::{self, Auth, FakeSmartlead};
use fake_providers::Fault;
use serde_json::{json, Value};

use crate::harness::{policies_with, repo_policies, wait_for, Gateway, GatewayOptions, Resp, TestDb};

const SMARTLEAD_KEY: &str = "sl-key-contract-7Qx9v2LmP4";
const HEYREACH_KEY: &str = "hr-key-contract-3Zt8w1KnR6";
const SMARTLEAD_WEBHOOK_SECRET: &str = "sl-webhook-secret-Jq5Vb8Ne";

pub(crate) enum Fake {
    Smartlead(FakeSmartlead),
    Heyreach(FakeHeyreach),
}

impl Fake {
    pub(crate) async fn start(provider: &str) -> Fake {
        match provider {
            "smartlead" => {
                let f = FakeSmartlead::start(SMARTLEAD_KEY).await.unwrap();
                f.set_webhook_secret(Some(SMARTLEAD_WEBHOOK_SECRET));
                Fake::Smartlead(f)
            }
            _ => Fake::Heyreach(FakeHeyreach::start(HEYREACH_KEY).await.unwrap()),
        }
    }
    pub(crate) fn provider(&self) -> &'static str {
        match self {
            Fake::Smartlead(_) => "smartlead",
            Fake::Heyreach(_) => "heyreach",
        }
    }
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Fake::Smartlead(_) => SMARTLEAD_KEY,
            Fake::Heyreach(_) => HEYREACH_KEY,
        }
    }
    pub(crate) fn base_url(&self) -> String {
        match self {
            Fake::Smartlead(f) => f.base_url(),
            Fake::Heyreach(f) => f.base_url(),
        }
    }
    fn capability(&self) -> &'static str {
        match self {
            Fake::Smartlead(_) => "email_outreach",
            Fake::Heyreach(_) => "linkedin_outreach",
        }
    }
    fn channel(&self) -> &'static str {
        match self {
            Fake::Smartlead(_) => "email",
            Fake::Heyreach(_) => "linkedin",
        }
    }
    fn fail_next(&self, n: usize, fault: Fault) {
        match self {
            Fake::Smartlead(f) => f.fail_next(n, fault),
            Fake::Heyreach(f) => f.fail_next(n, fault),
        }
    }
    /// Every call's query and headers as text (to look for the key where the plugin could
    /// have put it), and how many calls carried the key where the host puts it.
    fn calls_with_key(&self) -> usize {
        match self {
            Fake::Smartlead(f) => f.calls().iter().filter(|c| c.query_param("api_key") == Some(SMARTLEAD_KEY)).count(),
            Fake::Heyreach(f) => f.calls().iter().filter(|c| c.header("x-api-key") == Some(HEYREACH_KEY)).count(),
        }
    }
    fn call_count(&self) -> usize {
        match self {
            Fake::Smartlead(f) => f.calls().len(),
            Fake::Heyreach(f) => f.calls().len(),
        }
    }
    fn webhooks_registered(&self) -> usize {
        match self {
            Fake::Smartlead(f) => f.state().webhooks.len(),
            Fake::Heyreach(f) => f.state().webhooks.len(),
        }
    }
    /// Prepares the provider for a campaign called `name` (HeyReach's API creates none: it
    /// is made in its UI and linked by name).
    pub(crate) fn prepare_campaign(&self, name: &str) {
        if let Fake::Heyreach(f) = self {
            f.add_campaign(name);
        }
    }
    /// (status, number of leads) of the provider's campaign.
    pub(crate) fn campaign(&self, provider_id: &str) -> Option<(String, usize)> {
        let id: i64 = provider_id.parse().ok()?;
        match self {
            Fake::Smartlead(f) => f.state().campaigns.get(&id).map(|c| (c.status.clone(), c.leads.len())),
            Fake::Heyreach(f) => f.state().campaigns.get(&id).map(|c| (c.status.clone(), c.leads.len())),
        }
    }
    pub(crate) fn lead(&self, i: usize) -> Value {
        match self {
            Fake::Smartlead(_) => json!({ "email": format!("Lead{i}@Example.test"), "first_name": "Lee", "company": "Acme" }),
            Fake::Heyreach(_) => json!({ "profile_url": format!("https://www.linkedin.com/in/lead-{i}"), "first_name": "Lee" }),
        }
    }
    /// Delivers a reply from lead 0 to every registered webhook; the deliveries' statuses.
    pub(crate) async fn send_reply(&self, provider_id: &str, message_id: &str) -> Vec<u16> {
        let id: i64 = provider_id.parse().unwrap();
        let delivered = match self {
            Fake::Smartlead(f) => {
                let e = smartlead::Event::reply(id, "lead0@example.test", message_id, "Sounds good, call me");
                f.deliver_to_registered(&e, Auth::Signature).await.unwrap()
            }
            Fake::Heyreach(f) => {
                let e = heyreach::Event::reply(id, "https://www.linkedin.com/in/lead-0", message_id, "Sounds good");
                f.deliver_to_registered(&e).await.unwrap()
            }
        };
        delivered.iter().map(|(_, d)| d.status).collect()
    }
    pub(crate) fn crm_type(&self) -> &'static str {
        match self {
            Fake::Smartlead(_) => "email.replied",
            Fake::Heyreach(_) => "linkedin.replied",
        }
    }
}

/// The shipped policies, with retries short enough for a test when `fast_retries`.
fn policies(fast_retries: bool) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_policies().join("providers.toml")).unwrap();
    let text = if fast_retries {
        text.replace("max_attempts = 8", "max_attempts = 2").replace("retry_base_ms = 2000", "retry_base_ms = 20")
    } else {
        text
    };
    policies_with("providers.toml", &text)
}

pub(crate) async fn start(db: &TestDb, fast_retries: bool) -> Gateway {
    let mut opts = GatewayOptions::new(db);
    opts.policies = policies(fast_retries);
    // The fakes listen on 127.0.0.1: the operator's switch for local providers.
    opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    Gateway::start_with(opts).await
}

pub(crate) struct Org {
    pub(crate) id: String,
    pub(crate) admin: String,
    pub(crate) member: String,
}

pub(crate) async fn send(gw: &Gateway, method: &str, token: &str, path: &str, body: Option<Value>) -> Resp {
    let r = gw.req(method, path).token(token);
    match body {
        Some(b) => r.json(&b).send().await,
        None => r.send().await,
    }
}


/// An org with the provider configured, the capability enabled and provisioned (ready).
pub(crate) async fn onboard(gw: &Gateway, fake: &Fake, name: &str) -> Org {
    let id = gw.create_org(name, Some("unmetered")).await;
    let lower = name.to_lowercase();
    let (admin, _, _) = gw.create_token(&id, "admin", &format!("admin@{lower}.test")).await;
    let (member, _, _) = gw.create_token(&id, "member", &format!("member@{lower}.test")).await;
    let sup = gw.super_token.clone();
    let mut config = json!({ "credentials": { "api_key": fake.key() }, "base_url": fake.base_url() });
    if fake.provider() == "smartlead" {
        config["webhook_secret"] = json!(SMARTLEAD_WEBHOOK_SECRET);
    }
    let r = send(gw, "PUT", &sup, &format!("/v1/admin/orgs/{id}/providers/{}", fake.provider()), Some(config)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(fake.key()) && !r.text.contains(SMARTLEAD_WEBHOOK_SECRET), "{}", r.text);
    let r = send(gw, "PUT", &sup, &format!("/v1/admin/orgs/{id}/capabilities/{}", fake.capability()), Some(json!({ "provider": fake.provider() }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(gw, "POST", &sup, &format!("/v1/admin/orgs/{id}/provisioning/{}", fake.capability()), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let path = format!("/v1/admin/orgs/{id}/provisioning/{}", fake.capability());
    let status = wait_for("provisioning", gw, || async {
        let r = send(gw, "GET", &sup, &path, None).await;
        let s = r.json["status"].as_str().unwrap_or_default().to_string();
        (s != "pending").then_some(r.json.clone())
    })
    .await;
    assert_eq!(status["status"], "ready", "{status}");
    Org { id, admin, member }
}

/// A synced campaign with `leads` synced leads, started; its (id, provider id).
pub(crate) async fn campaign(gw: &Gateway, fake: &Fake, org: &Org, name: &str, leads: usize) -> (String, String) {
    fake.prepare_campaign(name);
    let r = send(gw, "POST", &org.admin, "/v1/campaigns", Some(json!({ "name": name, "channel": fake.channel() }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["sync_status"], "pending");
    let id = r.json["campaign_id"].as_str().unwrap().to_string();
    let path = format!("/v1/campaigns/{id}");
    let synced = wait_for("campaign sync", gw, || async {
        let c = send(gw, "GET", &org.member, &path, None).await.json;
        (c["sync_status"] != "pending").then_some(c)
    })
    .await;
    assert_eq!(synced["sync_status"], "synced", "{synced}");
    let provider_id = synced["provider_id"].as_str().unwrap().to_string();
    assert!(fake.campaign(&provider_id).is_some(), "the provider has the campaign");

    let batch: Vec<Value> = (0..leads).map(|i| fake.lead(i)).collect();
    let r = send(gw, "POST", &org.admin, &format!("{path}/leads"), Some(json!({ "leads": batch }))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["added"], leads);
    let lp = format!("{path}/leads");
    wait_for("leads sync", gw, || async {
        let l = send(gw, "GET", &org.member, &lp, None).await.json;
        let all = l["leads"].as_array()?.clone();
        (all.len() == leads && all.iter().all(|x| x["sync_status"] == "synced")).then_some(())
    })
    .await;
    assert_eq!(fake.campaign(&provider_id).unwrap().1, leads, "every lead reached the provider");

    let r = send(gw, "POST", &org.admin, &format!("{path}/status"), Some(json!({ "status": "active" }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (id, provider_id)
}

async fn contract(provider: &str) {
    let fake = Fake::start(provider).await;
    let db = TestDb::new().await;
    let gw = start(&db, false).await;
    let org = onboard(&gw, &fake, "Acme").await;
    assert!(fake.webhooks_registered() >= 1, "provisioning registered the org's webhook");

    // 450 leads: more than one batch at either provider (400 and 100 per call).
    let (id, provider_id) = campaign(&gw, &fake, &org, "Spring launch", 450).await;
    let active = match provider {
        "smartlead" => "ACTIVE",
        _ => "IN_PROGRESS",
    };
    let status = wait_for("the provider's campaign started", &gw, || async {
        fake.campaign(&provider_id).filter(|(s, _)| s == active).map(|(s, _)| s)
    })
    .await;
    assert_eq!(status, active);

    // The provider's reply webhook becomes a reply, a CRM event and analytics; twice is once.
    for _ in 0..2 {
        let delivered = fake.send_reply(&provider_id, "msg-1").await;
        assert!(!delivered.is_empty() && delivered.iter().all(|s| *s == 200), "{delivered:?}\n{}", gw.stderr());
    }
    let replies_path = format!("/v1/campaigns/{id}/replies");
    let replies = wait_for("the reply", &gw, || async {
        let r = send(&gw, "GET", &org.member, &replies_path, None).await.json;
        r["replies"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let analytics_path = format!("/v1/campaigns/{id}/analytics");
    let analytics = wait_for("analytics", &gw, || async {
        let a = send(&gw, "GET", &org.member, &analytics_path, None).await.json;
        (a["totals"]["replied"] == 1).then_some(a)
    })
    .await;
    assert_eq!(analytics["totals"]["replied"], 1, "{analytics}");
    let events = send(&gw, "GET", &org.member, "/v1/crm/events", None).await;
    assert_eq!(events.status, 200, "{}", events.text);
    let n = events.json["events"].as_array().map(|a| a.iter().filter(|e| e["type"] == fake.crm_type()).count()).unwrap_or(0);
    assert_eq!(n, 1, "one CRM event for the reply: {}", events.text);

    // Another org sees none of it.
    let other = gw.create_org("Other", Some("unmetered")).await;
    let (stranger, _, _) = gw.create_token(&other, "admin", "admin@other.test").await;
    for path in [format!("/v1/campaigns/{id}"), replies_path.clone(), analytics_path.clone(), format!("/v1/campaigns/{id}/leads")] {
        assert_eq!(send(&gw, "GET", &stranger, &path, None).await.status, 404, "{path}");
    }

    // The key reached the provider on every call, where the host puts it, and nowhere else.
    assert!(fake.calls_with_key() > 0);
    assert_eq!(fake.calls_with_key(), fake.call_count(), "every call to the provider carried the org's key");
    let logs = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(!logs.contains(fake.key()), "the key is in the logs");
    assert!(!logs.contains(SMARTLEAD_WEBHOOK_SECRET), "the webhook secret is in the logs");
    let pool = db.owner_pool().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM agent_runs WHERE coalesce(error, '') LIKE '%' || $1 || '%' OR input::text LIKE '%' || $1 || '%') \
              + (SELECT count(*) FROM jobs WHERE coalesce(last_error, '') LIKE '%' || $1 || '%' OR payload::text LIKE '%' || $1 || '%') \
              + (SELECT count(*) FROM campaigns WHERE coalesce(sync_error, '') LIKE '%' || $1 || '%')",
    )
    .bind(fake.key())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "the key is stored in plain text somewhere a tenant can read");
}

#[tokio::test]
async fn smartlead_passes_the_provider_contract() {
    contract("smartlead").await;
}

#[tokio::test]
async fn heyreach_passes_the_provider_contract() {
    contract("heyreach").await;
}

async fn failures(provider: &str) {
    let fake = Fake::start(provider).await;
    let db = TestDb::new().await;
    let gw = start(&db, true).await;
    let org = onboard(&gw, &fake, "Acme").await;
    let (id, _) = campaign(&gw, &fake, &org, "Autumn", 2).await;
    let pool = db.owner_pool().await;
    let leads = send(&gw, "GET", &org.member, &format!("/v1/campaigns/{id}/leads"), None).await.json;
    let lead = leads["leads"][1]["lead_id"].as_str().unwrap().to_string();

    // Every job so far has finished, so the faults below meet the job under test.
    wait_for("the earlier jobs", &gw, || async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1::uuid AND status IN ('pending', 'processing')")
            .bind(&org.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (open == 0).then_some(())
    })
    .await;
    let calls_before = fake.call_count();

    // A 429 from the provider reschedules the job for its Retry-After without using an
    // attempt: with max_attempts = 2, two refusals and the action still lands.
    fake.fail_next(2, Fault::RateLimited { retry_after_secs: 1 });
    let r = send(&gw, "POST", &org.admin, &format!("/v1/campaigns/{id}/leads/{lead}/unsubscribe"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job: (String, i32) = wait_for("the rate-limited job", &gw, || async {
        let row: Option<(String, i32)> = sqlx::query_as(
            "SELECT status, attempts FROM jobs WHERE tenant_id = $1::uuid AND payload->>'op' = 'lead_action' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(&org.id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        row.filter(|(s, _)| s == "done")
    })
    .await;
    assert!(job.1 <= 1, "a 429 used up attempts: {job:?}");
    assert!(fake.call_count() >= calls_before + 3, "the two refused calls and the one that landed");

    // A provider that keeps failing: retried, dead, and the local row says failed with the
    // reason; nothing local is lost.
    fake.fail_next(1000, Fault::Status(503));
    fake.prepare_campaign("Doomed");
    let r = send(&gw, "POST", &org.admin, "/v1/campaigns", Some(json!({ "name": "Doomed", "channel": fake.channel() }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let doomed = r.json["campaign_id"].as_str().unwrap().to_string();
    let path = format!("/v1/campaigns/{doomed}");
    let failed = wait_for("the failed sync", &gw, || async {
        let c = send(&gw, "GET", &org.member, &path, None).await.json;
        (c["sync_status"] == "failed").then_some(c)
    })
    .await;
    assert!(failed["sync_error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_eq!(failed["name"], "Doomed", "the local campaign is kept");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1::uuid AND status = 'dead' AND payload->>'campaign_id' = $2")
        .bind(&org.id)
        .bind(&doomed)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, 1, "the job is in the dead letter, replayable");
}

#[tokio::test]
async fn smartlead_failures_are_paced_retried_and_recorded() {
    failures("smartlead").await;
}

#[tokio::test]
async fn heyreach_failures_are_paced_retried_and_recorded() {
    failures("heyreach").await;
}
