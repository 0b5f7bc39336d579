//! The optimizer's changes (`docs/optimizer.md`) end to end: the shipped smartlead adapter
//! against its fake provider, the shipped rules-only optimizer plugin, real jobs. Activity is
//! inserted directly (as the adapter would record it) so the rules propose a new subject;
//! runs go through `POST /v1/optimizations/run` and are waited for by polling.

use fake_providers::smartlead::FakeSmartlead;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{assert_error, policies_with, repo_policies, wait_for, Gateway, GatewayOptions, Resp, TestDb};

const KEY: &str = "sl-key-optimizer-4Fz8q1WmK2";
const WEBHOOK_SECRET: &str = "sl-webhook-secret-Op7Xc3Rt";
const SUBJECT: &str = "Hello there";

struct Org {
    id: String,
    admin: String,
    admin_user: String,
    member: String,
}

async fn start(db: &TestDb) -> Gateway {
    let text = std::fs::read_to_string(repo_policies().join("providers.toml")).unwrap();
    let text = text.replace("max_attempts = 8", "max_attempts = 2").replace("retry_base_ms = 2000", "retry_base_ms = 20");
    let mut opts = GatewayOptions::new(db);
    opts.policies = policies_with("providers.toml", &text);
    opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    Gateway::start_with(opts).await
}

async fn send(gw: &Gateway, method: &str, token: &str, path: &str, body: Option<Value>) -> Resp {
    let r = gw.req(method, path).token(token);
    match body {
        Some(b) => r.json(&b).send().await,
        None => r.send().await,
    }
}

async fn org(gw: &Gateway, name: &str) -> Org {
    let id = gw.create_org(name, Some("unmetered")).await;
    let lower = name.to_lowercase();
    let (admin, admin_user, _) = gw.create_token(&id, "admin", &format!("admin@{lower}.test")).await;
    let (member, _, _) = gw.create_token(&id, "member", &format!("member@{lower}.test")).await;
    Org { id, admin, admin_user, member }
}

/// An org with smartlead configured and provisioned, and a synced email campaign whose
/// sequence (version 1) is synced: (org, campaign id, provider id).
async fn onboard(gw: &Gateway, fake: &FakeSmartlead, name: &str) -> (Org, String, i64) {
    let o = org(gw, name).await;
    let sup = gw.super_token.clone();
    let config = json!({ "credentials": { "api_key": KEY }, "base_url": fake.base_url(), "webhook_secret": WEBHOOK_SECRET });
    let r = send(gw, "PUT", &sup, &format!("/v1/admin/orgs/{}/providers/smartlead", o.id), Some(config)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(gw, "PUT", &sup, &format!("/v1/admin/orgs/{}/capabilities/email_outreach", o.id), Some(json!({ "provider": "smartlead" }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let prov = format!("/v1/admin/orgs/{}/provisioning/email_outreach", o.id);
    assert_eq!(send(gw, "POST", &sup, &prov, None).await.status, 202);
    let p = wait_for("provisioning", gw, || async {
        let r = send(gw, "GET", &sup, &prov, None).await;
        (r.json["status"] != "pending").then_some(r.json)
    })
    .await;
    assert_eq!(p["status"], "ready", "{p}");
    let r = send(gw, "POST", &o.admin, "/v1/campaigns", Some(json!({ "name": format!("{name} Q1"), "channel": "email" }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["campaign_id"].as_str().unwrap().to_string();
    let c = wait_for("campaign sync", gw, || async {
        let c = send(gw, "GET", &o.member, &format!("/v1/campaigns/{id}"), None).await.json;
        (c["sync_status"] != "pending").then_some(c)
    })
    .await;
    assert_eq!(c["sync_status"], "synced", "{c}");
    let provider_id: i64 = c["provider_id"].as_str().unwrap().parse().unwrap();
    save_sequence(gw, &o, &id, SUBJECT, 1).await;
    (o, id, provider_id)
}

/// Saves a two-step sequence whose first subject is `subject`; waits until it is synced.
async fn save_sequence(gw: &Gateway, o: &Org, campaign: &str, subject: &str, version: i64) {
    let steps = json!({ "steps": [{ "subject": subject, "body": "Hi {{first_name}}" }, { "body": "Following up", "delay_days": 3 }] });
    let r = send(gw, "POST", &o.admin, &format!("/v1/campaigns/{campaign}/sequence"), Some(steps)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["version"], version);
    wait_sequence(gw, o, campaign, version).await;
}

/// Waits until `version` is the campaign's latest and synced; returns it.
async fn wait_sequence(gw: &Gateway, o: &Org, campaign: &str, version: i64) -> Value {
    let s = wait_for("sequence sync", gw, || async {
        let s = send(gw, "GET", &o.member, &format!("/v1/campaigns/{campaign}/sequence"), None).await.json;
        (s["version"] == version && s["sync_status"] != "pending").then_some(s)
    })
    .await;
    assert_eq!(s["sync_status"], "synced", "{s}");
    s
}

/// 100 sends of step 1, 5 of them opened: an open rate the rules answer with a new subject.
async fn low_open_rate(pool: &PgPool, org: &str, campaign: &str) {
    sqlx::query(
        "INSERT INTO campaign_activity (tenant_id, campaign_id, seq_number, kind, event_key) \
         SELECT $1::uuid, $2::uuid, 1, 'message.sent', 'sent-' || g FROM generate_series(1, 100) g \
         UNION ALL SELECT $1::uuid, $2::uuid, 1, 'message.opened', 'open-' || g FROM generate_series(1, 5) g",
    )
    .bind(org)
    .bind(campaign)
    .execute(pool)
    .await
    .unwrap();
}

/// Starts a run for the campaign and waits for its job; returns the run's `agent_runs` output.
async fn run(gw: &Gateway, pool: &PgPool, o: &Org, campaign: &str) -> Value {
    let r = send(gw, "POST", &o.admin, "/v1/optimizations/run", Some(json!({ "campaign_id": campaign }))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["run"], "queued");
    let job = r.json["job_id"].as_str().unwrap().to_string();
    let status = wait_for("optimizer job", gw, || async {
        let s: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1::uuid").bind(&job).fetch_one(pool).await.unwrap();
        (s == "done" || s == "dead").then_some(s)
    })
    .await;
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM jobs WHERE id = $1::uuid").bind(&job).fetch_one(pool).await.unwrap();
    assert_eq!(status, "done", "{error:?}");
    let (input, output): (Value, Value) =
        sqlx::query_as("SELECT input, output FROM agent_runs WHERE job_id = $1::uuid AND status = 'succeeded'").bind(&job).fetch_one(pool).await.unwrap();
    assert_eq!(input["campaign_id"], campaign, "agent_runs.input carries the payload");
    assert_eq!(input["trigger"], "manual");
    output
}

async fn changes(gw: &Gateway, o: &Org, query: &str) -> Vec<Value> {
    let r = send(gw, "GET", &o.member, &format!("/v1/optimizations{query}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["optimizations"].as_array().unwrap().clone()
}

async fn change(gw: &Gateway, o: &Org, id: &str) -> Value {
    let r = send(gw, "GET", &o.member, &format!("/v1/optimizations/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Waits until the change leaves `applying`; returns it.
async fn settled(gw: &Gateway, o: &Org, id: &str) -> Value {
    wait_for("change settled", gw, || async {
        let c = change(gw, o, id).await;
        (c["status"] != "applying").then_some(c)
    })
    .await
}

fn path(id: &str, action: &str) -> String {
    format!("/v1/optimizations/{id}/{action}")
}

/// The fake provider's first subject of the campaign.
fn provider_subject(fake: &FakeSmartlead, provider_id: i64) -> Value {
    fake.state().campaigns.get(&provider_id).and_then(|c| c.sequences.first().cloned()).map(|s| s["subject"].clone()).unwrap_or(Value::Null)
}

fn transitions(c: &Value) -> Vec<(String, String)> {
    c["transitions"].as_array().unwrap().iter().map(|t| (t["to"].as_str().unwrap().to_string(), t["actor"].as_str().unwrap().to_string())).collect()
}

#[tokio::test]
async fn manual_mode_queues_an_approval_applies_it_at_the_provider_and_a_rollback_restores_it() {
    let fake = FakeSmartlead::start(KEY).await.unwrap();
    fake.set_webhook_secret(Some(WEBHOOK_SECRET));
    let db = TestDb::new().await;
    let gw = start(&db).await;
    let pool = db.owner_pool().await;
    let (a, campaign, provider_id) = onboard(&gw, &fake, "Acme").await;
    let b = org(&gw, "Beta").await;
    low_open_rate(&pool, &a.id, &campaign).await;

    // Running is an admin's; another org's campaign, or a bad id, is refused with nothing queued.
    let jobs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'optimizer'").fetch_one(&pool).await.unwrap();
    assert_error(&send(&gw, "POST", &a.member, "/v1/optimizations/run", Some(json!({}))).await, 403, "FORBIDDEN");
    assert_error(&send(&gw, "POST", &b.admin, "/v1/optimizations/run", Some(json!({ "campaign_id": campaign }))).await, 404, "NOT_FOUND");
    let r = send(&gw, "POST", &a.admin, "/v1/optimizations/run", Some(json!({ "campaign_id": "nope" }))).await;
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert_eq!(r.json["details"][0]["field"], "campaign_id");
    let jobs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'optimizer'").fetch_one(&pool).await.unwrap();
    assert_eq!(jobs_before, jobs_after);

    // A run proposes a new subject, with before and after, and waits for a person.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!((out["proposed"].clone(), out["auto_applied"].clone(), out["llm"].clone()), (json!(1), json!(0), json!("not_configured")), "{out}");
    let list = changes(&gw, &a, "?status=proposed").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    let id = c["optimization_id"].as_str().unwrap().to_string();
    assert_eq!(c["optimization_type"], "update_subject");
    assert_eq!(c["base_version"], 1);
    assert_eq!(c["source"], "rules");
    assert!(c["rationale"].as_str().is_some_and(|r| !r.is_empty()));
    let item = &c["changes"][0];
    assert_eq!((item["asset_type"].as_str(), item["asset_id"].as_str(), item["field"].as_str()), (Some("sequence_step"), Some("1"), Some("subject")));
    assert_eq!(item["previous_value"], SUBJECT);
    let new_subject = item["new_value"].as_str().unwrap().to_string();
    assert_ne!(new_subject, SUBJECT);
    assert_eq!(item["auto_applied"], false);
    assert_eq!(changes(&gw, &a, &format!("?campaign_id={campaign}")).await.len(), 1);
    assert!(changes(&gw, &a, "?status=applied").await.is_empty());
    assert_error(&send(&gw, "GET", &a.member, "/v1/optimizations?status=bogus", None).await, 400, "VALIDATION_FAILED");
    assert_error(&send(&gw, "GET", &a.member, "/v1/optimizations?campaign_id=x", None).await, 400, "VALIDATION_FAILED");
    assert_error(&send(&gw, "GET", &a.member, "/v1/optimizations?limit=201", None).await, 400, "VALIDATION_FAILED");
    assert_eq!(provider_subject(&fake, provider_id), SUBJECT, "nothing reached the provider yet");

    // The same data again proposes nothing new.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 0, "{out}");
    assert_eq!(changes(&gw, &a, "").await.len(), 1);

    // Another org's id, or no UUID, is a 404 on every route; a member cannot review.
    for (method, p) in [("GET", format!("/v1/optimizations/{id}")), ("POST", path(&id, "approve")), ("POST", path(&id, "reject")), ("POST", path(&id, "rollback"))] {
        assert_error(&send(&gw, method, &b.admin, &p, None).await, 404, "NOT_FOUND");
        assert_error(&send(&gw, method, &a.admin, &p.replace(&id, "not-a-uuid"), None).await, 404, "NOT_FOUND");
        assert_error(&send(&gw, method, &a.admin, &p.replace(&id, &uuid::Uuid::new_v4().to_string()), None).await, 404, "NOT_FOUND");
        if method == "POST" {
            assert_error(&send(&gw, method, &a.member, &p, None).await, 403, "FORBIDDEN");
        }
    }
    assert!(changes(&gw, &b, "").await.is_empty());
    assert_eq!(change(&gw, &a, &id).await["status"], "proposed");
    assert_error(&send(&gw, "POST", &a.admin, &path(&id, "rollback"), None).await, 409, "CONFLICT");

    // Approve: a new sequence version and a sync job; applied once the adapter synced it.
    let r = send(&gw, "POST", &a.admin, &path(&id, "approve"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["status"], "applying");
    assert_eq!(r.json["result_version"], 2);
    assert_eq!(r.json["reviewed_by"], format!("user:{}", a.admin_user));
    assert!(r.json["job_id"].is_string());
    let done = settled(&gw, &a, &id).await;
    assert_eq!(done["status"], "applied", "{done}");
    assert!(done["applied_at"].is_string());
    assert_eq!(done["applied_by"], format!("user:{}", a.admin_user));
    let seq = wait_sequence(&gw, &a, &campaign, 2).await;
    assert_eq!(seq["steps"][0]["subject"], new_subject);
    assert_eq!(seq["steps"][1]["body"], "Following up", "the other steps are kept");
    assert_eq!(provider_subject(&fake, provider_id), new_subject, "the provider has the new subject");
    let user = format!("user:{}", a.admin_user);
    assert_eq!(
        transitions(&done),
        [("proposed", "system:optimizer"), ("approved", user.as_str()), ("applying", user.as_str()), ("applied", "system:sync")]
            .map(|(s, a)| (s.to_string(), a.to_string()))
    );
    for action in ["approve", "reject"] {
        assert_error(&send(&gw, "POST", &a.admin, &path(&id, action), None).await, 409, "CONFLICT");
    }

    // Rollback: a recorded change of its own, through the same path; the provider has the
    // previous subject again, in a new version.
    let r = send(&gw, "POST", &a.admin, &path(&id, "rollback"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let rb = r.json["optimization_id"].as_str().unwrap().to_string();
    assert_eq!(r.json["optimization_type"], "rollback");
    assert_eq!(r.json["source"], "rollback");
    assert_eq!(r.json["rollback_of"], id.as_str());
    assert_eq!(r.json["changes"][0]["previous_value"], new_subject.as_str());
    assert_eq!(r.json["changes"][0]["new_value"], SUBJECT);
    assert_eq!(r.json["status"], "applying");
    let original = change(&gw, &a, &id).await;
    assert_eq!(original["status"], "rolled_back");
    assert_eq!(original["rolled_back_by"], user.as_str());
    assert_eq!(original["rolled_back_by_change"], rb.as_str());
    assert_eq!(settled(&gw, &a, &rb).await["status"], "applied");
    let seq = wait_sequence(&gw, &a, &campaign, 3).await;
    assert_eq!(seq["steps"][0]["subject"], SUBJECT);
    assert_eq!(provider_subject(&fake, provider_id), SUBJECT, "the provider has the previous subject again");
    // Once only; a rollback is not rolled back.
    for target in [&id, &rb] {
        assert_error(&send(&gw, "POST", &a.admin, &path(target, "rollback"), None).await, 409, "CONFLICT");
    }

    // What was rolled back is not proposed again on the restored version.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 0, "{out}");
    assert_eq!(out["dropped"][0]["reason"], "this change was rejected or rolled back before", "{out}");

    // A proposal nobody reviewed in time expires when someone tries: 409, and it stays expired.
    save_sequence(&gw, &a, &campaign, "Hello again", 4).await;
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 1, "{out}");
    let late = changes(&gw, &a, "?status=proposed").await[0]["optimization_id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE campaign_optimizations SET expires_at = now() - interval '1 second' WHERE id = $1::uuid").bind(&late).execute(&pool).await.unwrap();
    assert_error(&send(&gw, "POST", &a.admin, &path(&late, "approve"), None).await, 409, "CONFLICT");
    let c = change(&gw, &a, &late).await;
    assert_eq!(c["status"], "expired", "{c}");
    assert_eq!(transitions(&c).last().unwrap(), &("expired".to_string(), user.clone()));
    assert_error(&send(&gw, "POST", &a.admin, &path(&late, "approve"), None).await, 409, "CONFLICT");
    assert_eq!(wait_sequence(&gw, &a, &campaign, 4).await["steps"][0]["subject"], "Hello again", "nothing was applied");

    // The database refuses an illegal transition whoever asks, even raw SQL as gateway_app.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE gateway_app").execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(&a.id).execute(&mut *tx).await.unwrap();
    let e = sqlx::query("UPDATE campaign_optimizations SET status = 'applied' WHERE id = $1::uuid").bind(&id).execute(&mut *tx).await.unwrap_err();
    assert_eq!(e.as_database_error().and_then(|d| d.constraint()), Some("campaign_optimizations_transition"), "{e}");
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE gateway_app").execute(&mut *tx).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(&a.id).execute(&mut *tx).await.unwrap();
    let e = sqlx::query("DELETE FROM optimization_transitions WHERE optimization_id = $1::uuid").bind(&id).execute(&mut *tx).await.unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    tx.rollback().await.unwrap();

    // Every state a change entered is one audited row.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM optimization_transitions WHERE optimization_id = $1::uuid").bind(&id).fetch_one(&pool).await.unwrap();
    assert_eq!(n, 5, "proposed, approved, applying, applied, rolled_back");
}

#[tokio::test]
async fn auto_mode_applies_through_the_same_path_races_have_one_winner_and_stale_changes_are_superseded() {
    let fake = FakeSmartlead::start(KEY).await.unwrap();
    fake.set_webhook_secret(Some(WEBHOOK_SECRET));
    let db = TestDb::new().await;
    let gw = start(&db).await;
    let pool = db.owner_pool().await;
    let (a, campaign, provider_id) = onboard(&gw, &fake, "Auto").await;
    low_open_rate(&pool, &a.id, &campaign).await;
    // The settings route is another part's; the row it writes.
    let set_manual = |manual: bool| {
        let (pool, org) = (pool.clone(), a.id.clone());
        async move {
            sqlx::query(
                "INSERT INTO tenant_settings (tenant_id, require_manual_approval) VALUES ($1::uuid, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE SET require_manual_approval = EXCLUDED.require_manual_approval",
            )
            .bind(org)
            .bind(manual)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set_manual(false).await;

    // Auto mode: applied by system:auto through the approve path, and still visible.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!((out["proposed"].clone(), out["auto_applied"].clone()), (json!(1), json!(1)), "{out}");
    let list = changes(&gw, &a, "").await;
    assert_eq!(list.len(), 1);
    let id = list[0]["optimization_id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["changes"][0]["auto_applied"], true);
    let done = settled(&gw, &a, &id).await;
    assert_eq!(done["status"], "applied", "{done}");
    assert_eq!(done["reviewed_by"], "system:auto");
    assert_eq!(
        transitions(&done),
        [("proposed", "system:optimizer"), ("approved", "system:auto"), ("applying", "system:auto"), ("applied", "system:sync")]
            .map(|(s, a)| (s.to_string(), a.to_string()))
    );
    let new_subject = done["changes"][0]["new_value"].clone();
    assert_eq!(wait_sequence(&gw, &a, &campaign, 2).await["steps"][0]["subject"], new_subject);
    assert_eq!(provider_subject(&fake, provider_id), new_subject);
    set_manual(true).await;

    // Two rollbacks, an approve and a reject of one applied change at once: one rollback wins.
    let (p, pa, pr) = (path(&id, "rollback"), path(&id, "approve"), path(&id, "reject"));
    let (r1, r2, r3, r4) = tokio::join!(
        send(&gw, "POST", &a.admin, &p, None),
        send(&gw, "POST", &a.admin, &p, None),
        send(&gw, "POST", &a.admin, &pa, None),
        send(&gw, "POST", &a.admin, &pr, None),
    );
    let statuses = [r1.status, r2.status, r3.status, r4.status];
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 3, "{statuses:?}");
    for r in [&r1, &r2, &r3, &r4].into_iter().filter(|r| r.status == 409) {
        assert_error(r, 409, "CONFLICT");
    }
    let rollbacks: i64 = sqlx::query_scalar("SELECT count(*) FROM campaign_optimizations WHERE rollback_of = $1::uuid").bind(&id).fetch_one(&pool).await.unwrap();
    assert_eq!(rollbacks, 1);
    assert_eq!(change(&gw, &a, &id).await["status"], "rolled_back");
    wait_sequence(&gw, &a, &campaign, 3).await;
    let rb = changes(&gw, &a, "?status=applying").await.into_iter().chain(changes(&gw, &a, "?status=applied").await).find(|c| c["rollback_of"] == id.as_str()).unwrap();
    assert_eq!(settled(&gw, &a, rb["optimization_id"].as_str().unwrap()).await["status"], "applied");
    assert_eq!(provider_subject(&fake, provider_id), SUBJECT);

    // Manual mode again: a proposal on version 4 (a new subject, since the rolled-back one is
    // not proposed again); the campaign changes (version 5) before it is approved: 409 and it
    // is superseded, for good.
    save_sequence(&gw, &a, &campaign, "Hello again", 4).await;
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 1, "{out}");
    let stale = changes(&gw, &a, "?status=proposed").await;
    assert_eq!(stale.len(), 1);
    let stale = stale[0]["optimization_id"].as_str().unwrap().to_string();
    save_sequence(&gw, &a, &campaign, "Edited by hand", 5).await;
    assert_error(&send(&gw, "POST", &a.admin, &path(&stale, "approve"), None).await, 409, "CONFLICT");
    let c = change(&gw, &a, &stale).await;
    assert_eq!(c["status"], "superseded", "{c}");
    assert_eq!(transitions(&c).last().unwrap().0, "superseded");
    assert_eq!(wait_sequence(&gw, &a, &campaign, 5).await["steps"][0]["subject"], "Edited by hand", "nothing was applied");
    assert_error(&send(&gw, "POST", &a.admin, &path(&stale, "reject"), None).await, 409, "CONFLICT");

    // Approve and reject of one proposal at once: exactly one wins, and the state says which.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 1, "{out}");
    let fresh = changes(&gw, &a, "?status=proposed").await;
    let fresh = fresh[0]["optimization_id"].as_str().unwrap().to_string();
    let (pa, pr) = (path(&fresh, "approve"), path(&fresh, "reject"));
    let (ap, rj) = tokio::join!(
        send(&gw, "POST", &a.admin, &pa, None),
        send(&gw, "POST", &a.admin, &pr, Some(json!({ "reason": "not now" }))),
    );
    let final_state = settled(&gw, &a, &fresh).await;
    match (ap.status, rj.status) {
        (202, 409) => assert_eq!(final_state["status"], "applied", "{final_state}"),
        (409, 200) => {
            assert_eq!(final_state["status"], "rejected");
            assert_eq!(final_state["error"], "not now");
        }
        other => panic!("approve and reject answered {other:?}"),
    }
    let states: Vec<String> = transitions(&final_state).into_iter().map(|(s, _)| s).collect();
    assert!(states == ["proposed", "approved", "applying", "applied"] || states == ["proposed", "rejected"], "{states:?}");

    // The provider fails until the sync job is dead: the change is failed, with the reason.
    let v = send(&gw, "GET", &a.member, &format!("/v1/campaigns/{campaign}/sequence"), None).await.json["version"].as_i64().unwrap();
    save_sequence(&gw, &a, &campaign, "Third try", v + 1).await;
    fake.fail_next(1000, fake_providers::Fault::Status(503));
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 1, "{out}");
    let doomed = changes(&gw, &a, "?status=proposed").await[0]["optimization_id"].as_str().unwrap().to_string();
    assert_eq!(send(&gw, "POST", &a.admin, &path(&doomed, "approve"), None).await.status, 202);
    let c = settled(&gw, &a, &doomed).await;
    assert_eq!(c["status"], "failed", "{c}");
    assert!(c["error"].as_str().is_some_and(|e| !e.is_empty()), "{c}");
    assert_eq!(transitions(&c).last().unwrap(), &("failed".to_string(), "system:sync".to_string()));
    assert_error(&send(&gw, "POST", &a.admin, &path(&doomed, "rollback"), None).await, 409, "CONFLICT");
}

/// Seed 000's monitoring queries (`docs/runbooks.md`, "The optimizer"): each must find nothing.
async fn monitoring_violations(pool: &PgPool) -> (i64, i64, i64) {
    let cross_tenant: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_runs a1 JOIN agent_runs a2 \
         ON a1.tenant_id <> a2.tenant_id AND a1.input->>'campaign_id' = a2.input->>'campaign_id'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT tenant_id, props->>'idemKey' FROM crm_events WHERE props ? 'idemKey' \
         GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let unaudited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM campaign_optimizations o WHERE o.status IS DISTINCT FROM \
         (SELECT t.to_status FROM optimization_transitions t WHERE t.tenant_id = o.tenant_id \
          AND t.optimization_id = o.id ORDER BY t.id DESC LIMIT 1)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (cross_tenant, duplicates, unaudited)
}

/// The whole loop with every piece shipped: a provider reply webhook (twice) runs the fail-soft
/// chain, whose optimizer job asks the org's model (the fake, its key injected by the host);
/// the proposal waits, an admin approves it, the provider gets it, the admin rolls it back; the
/// run, the chain's steps and every transition are visible, and seed 000's monitoring queries
/// find nothing.
#[tokio::test]
async fn a_reply_webhook_chains_to_the_model_whose_change_is_approved_at_the_provider_and_rolled_back() {
    let fake = FakeSmartlead::start(KEY).await.unwrap();
    fake.set_webhook_secret(Some(WEBHOOK_SECRET));
    let chat = fake_providers::FakeChat::start("sk-fake-model-key-9Qw2").await.unwrap();
    let db = TestDb::new().await;
    let gw = start(&db).await;
    let pool = db.owner_pool().await;
    let (a, campaign, provider_id) = onboard(&gw, &fake, "Acme").await;
    let (b, b_campaign, _) = onboard(&gw, &fake, "Beta").await;
    let config = json!({ "credentials": { "api_key": chat.api_key() }, "base_url": chat.base_url() });
    let r = send(&gw, "PUT", &gw.super_token, &format!("/v1/admin/orgs/{}/providers/openai", a.id), Some(config)).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A lead, and step 1's sends and opens as the adapter recorded them.
    let r = send(&gw, "POST", &a.admin, &format!("/v1/campaigns/{campaign}/leads"), Some(json!({ "leads": [{ "email": "lee@example.test" }] }))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    low_open_rate(&pool, &a.id, &campaign).await;

    // The lead replies; the provider delivers it twice.
    let reply = fake_providers::smartlead::Event::reply(provider_id, "lee@example.test", "msg-flow-1", "Sounds good");
    for _ in 0..2 {
        let delivered = fake.deliver_to_registered(&reply, fake_providers::smartlead::Auth::Signature).await.unwrap();
        assert!(!delivered.is_empty() && delivered.iter().all(|(_, d)| d.status == 200), "{delivered:?}");
    }
    // One CRM event, one run of each chain step, all finished: the optimizer's job is the
    // chain's (trigger chain), and notify had no URL to call.
    let steps = wait_for("chain jobs", &gw, || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT kind, status FROM jobs WHERE tenant_id = $1::uuid AND kind IN ('stats', 'optimizer', 'notify') ORDER BY kind",
        )
        .bind(&a.id)
        .fetch_all(&pool)
        .await
        .unwrap();
        (rows.len() == 3 && rows.iter().all(|(_, s)| s == "done" || s == "dead")).then_some(rows)
    })
    .await;
    assert_eq!(
        steps,
        vec![("notify".into(), "done".into()), ("optimizer".into(), "done".into()), ("stats".into(), "done".into())],
        "one job per step, each done"
    );
    let crm: i64 = sqlx::query_scalar("SELECT count(*) FROM crm_events WHERE tenant_id = $1::uuid AND type = 'email.replied'")
        .bind(&a.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(crm, 1, "the same webhook twice is one event");

    // The run is visible in agent_runs with its input and outcome; it asked the model.
    let r = send(&gw, "GET", &a.member, "/v1/agent-runs?kind=optimizer", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let runs = r.json["agent_runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["input"]["trigger"], "chain");
    assert_eq!(runs[0]["input"]["campaign_id"], campaign);
    assert_eq!(runs[0]["output"]["llm"], "used", "{}", runs[0]);
    assert_eq!(runs[0]["output"]["proposed"], 1, "{}", runs[0]);
    let calls = chat.calls();
    assert_eq!(calls.len(), 1);
    assert!(!String::from_utf8_lossy(&calls[0].body).contains("lee@example.test"), "the model never sees a lead");

    // One change, from the model, waiting for a person (manual approval is the default).
    let list = changes(&gw, &a, &format!("?campaign_id={campaign}")).await;
    assert_eq!(list.len(), 1, "one webhook, one change: {list:?}");
    let id = list[0]["optimization_id"].as_str().unwrap().to_string();
    assert_eq!((list[0]["status"].as_str(), list[0]["source"].as_str()), (Some("proposed"), Some("llm")));
    let item = &list[0]["changes"][0];
    assert_eq!((item["previous_value"].as_str(), item["new_value"].as_str()), (Some(SUBJECT), Some("Model subject for step 1")));

    // Another org sees none of it.
    assert_error(&send(&gw, "GET", &b.member, &format!("/v1/optimizations/{id}"), None).await, 404, "NOT_FOUND");
    assert_error(&send(&gw, "POST", &b.admin, &path(&id, "approve"), None).await, 404, "NOT_FOUND");
    assert!(send(&gw, "GET", &b.member, "/v1/agent-runs?kind=optimizer", None).await.json["agent_runs"].as_array().unwrap().is_empty());
    assert!(changes(&gw, &b, &format!("?campaign_id={campaign}")).await.is_empty());
    assert!(changes(&gw, &b, &format!("?campaign_id={b_campaign}")).await.is_empty());

    // Approved, it reaches the provider; rolled back, the provider has the old subject again.
    assert_eq!(send(&gw, "POST", &a.admin, &path(&id, "approve"), None).await.status, 202);
    assert_eq!(settled(&gw, &a, &id).await["status"], "applied");
    assert_eq!(provider_subject(&fake, provider_id), "Model subject for step 1");
    let r = send(&gw, "POST", &a.admin, &path(&id, "rollback"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let back = r.json["optimization_id"].as_str().unwrap().to_string();
    assert_eq!(settled(&gw, &a, &back).await["status"], "applied");
    assert_eq!(provider_subject(&fake, provider_id), SUBJECT);
    let original = change(&gw, &a, &id).await;
    assert_eq!(original["status"], "rolled_back");
    let states: Vec<String> = transitions(&original).into_iter().map(|(s, _)| s).collect();
    assert_eq!(states, ["proposed", "approved", "applying", "applied", "rolled_back"]);

    // Asked again, the model proposes the same subject: what a person rolled back is not
    // proposed again.
    let out = run(&gw, &pool, &a, &campaign).await;
    assert_eq!(out["proposed"], 0, "{out}");
    assert_eq!(out["dropped"][0]["reason"], "this change was rejected or rolled back before", "{out}");

    assert_eq!(monitoring_violations(&pool).await, (0, 0, 0), "seed 000's monitoring queries");
}
