//! Tenant automation (docs/optimizer.md): settings and the notify secret shown once, the
//! provider reply's fail-soft chain (one job per step, however often the webhook comes; a
//! signed notification without message text or addresses; a failing tenant webhook that
//! never touches the CRM write), `GET /v1/agent-runs`, and schedules whose slots run once
//! across two replicas, skipped when a recent run covers them. Another org sees none of it.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::harness::{assert_error, policies_with, repo_policies, wait_for, Gateway, GatewayOptions, TestDb};
use crate::providers::{campaign, onboard, send, start, Fake};

/// A tenant's webhook receiver on loopback: what it got, and the status it answers.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/gateway", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(http::HeaderMap, bytes::Bytes)>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (g, s) = (got.clone(), status.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (g, s) = (g.clone(), s.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            g.lock().unwrap().push((parts.headers, bytes));
                            let status = s.load(Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder().status(status).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { url, got, status }
    }

    fn received(&self) -> Vec<(http::HeaderMap, bytes::Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

/// Checks a Standard Webhooks signature the way a receiver would, on its own.
fn signed_with(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    (chrono::Utc::now().timestamp() - ts).abs() < 300 && h("webhook-signature").split(' ').any(|s| s == format!("v1,{expected}"))
}

async fn jobs_of(pool: &sqlx::PgPool, org: &str, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1::uuid AND kind = $2")
        .bind(org)
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn settings_are_validated_and_the_notify_secret_is_shown_once() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    // The CRM route with the chain an operator opts into.
    let crm = std::fs::read_to_string(repo_policies().join("crm.toml")).unwrap();
    let crm = crm.replacen("idempotency = \"optional\"\n", "idempotency = \"optional\"\nchain = [\"notify\"]\n", 1);
    assert!(crm.contains("chain = [\"notify\"]"));
    opts.policies = policies_with("crm.toml", &crm);
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    let (member, _, _) = gw.create_token(&org, "member", "member@acme.test").await;
    let recv = Receiver::start().await;

    let r = send(&gw, "GET", &member, "/v1/settings", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"require_manual_approval": true, "notify_url": null, "llm_model": null, "updated_at": null}));
    assert_error(&send(&gw, "PUT", &member, "/v1/settings", Some(json!({"require_manual_approval": false}))).await, 403, "FORBIDDEN");

    // Refused: nothing is written.
    for (body, code, field) in [
        (json!({"notify_url": "ftp://example.com/x"}), "VALIDATION_FAILED", "notify_url"),
        (json!({"notify_url": "https://user:pw@example.com/x"}), "VALIDATION_FAILED", "notify_url"),
        (json!({"notify_url": "https://example.com/x#frag"}), "VALIDATION_FAILED", "notify_url"),
        (json!({"notify_url": "http://10.1.2.3/hook"}), "PROVIDER_URL_NOT_ALLOWED", "notify_url"),
        (json!({"notify_url": "https://169.254.169.254/latest"}), "PROVIDER_URL_NOT_ALLOWED", "notify_url"),
        (json!({"llm_model": "gpt 4!"}), "VALIDATION_FAILED", "llm_model"),
        (json!({"llm_model": ""}), "VALIDATION_FAILED", "llm_model"),
        (json!({"require_manual_approval": "no"}), "VALIDATION_FAILED", "require_manual_approval"),
        (json!({"notify_secret": "whsec_mine"}), "VALIDATION_FAILED", "notify_secret"),
    ] {
        let r = send(&gw, "PUT", &admin, "/v1/settings", Some(body.clone())).await;
        assert_error(&r, 400, code);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    assert_eq!(send(&gw, "GET", &member, "/v1/settings", None).await.json["updated_at"], Value::Null, "nothing was written");

    // A new URL: its secret, once.
    let r = send(&gw, "PUT", &admin, "/v1/settings", Some(json!({"notify_url": recv.url, "llm_model": "gpt-4o-mini"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = r.json["notify_secret"].as_str().expect("the secret, shown once").to_string();
    assert!(secret.starts_with("whsec_") && base64::engine::general_purpose::STANDARD.decode(&secret[6..]).unwrap().len() == 32);
    assert_eq!(r.json["notify_url"], recv.url.as_str());
    assert_eq!(r.json["require_manual_approval"], true);
    let got = send(&gw, "GET", &member, "/v1/settings", None).await;
    assert!(got.json.get("notify_secret").is_none() && !got.text.contains(&secret[6..]), "{}", got.text);
    assert_eq!(got.json["llm_model"], "gpt-4o-mini");
    // The same URL again, or another field: no new secret; the URL and model stay.
    let r = send(&gw, "PUT", &admin, "/v1/settings", Some(json!({"notify_url": recv.url}))).await;
    assert!(r.json.get("notify_secret").is_none(), "{}", r.text);
    let r = send(&gw, "PUT", &admin, "/v1/settings", Some(json!({"require_manual_approval": false}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("notify_secret").is_none());
    assert_eq!((r.json["notify_url"].as_str(), r.json["llm_model"].as_str(), &r.json["require_manual_approval"]), (Some(recv.url.as_str()), Some("gpt-4o-mini"), &json!(false)));
    // The secret is stored sealed, not as text.
    let pool = db.owner_pool().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT notify_secret FROM tenant_settings WHERE tenant_id = $1::uuid").bind(&org).fetch_one(&pool).await.unwrap();
    assert!(!stored.windows(8).any(|w| secret.as_bytes()[6..].windows(8).any(|s| s == w)), "the secret is in the table");

    // A CRM event with a chain notifies, signed with that secret; a replay does not.
    let track = json!({"type": "signup", "contact": {"email": "ada@example.com", "name": "Ada"}});
    let r = gw.req("POST", "/v1/crm/track").token(&member).header("idempotency-key", "k-1").json(&track).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let event_id = r.json["event_id"].as_str().unwrap().to_string();
    let r = gw.req("POST", "/v1/crm/track").token(&member).header("idempotency-key", "k-1").json(&track).send().await;
    assert_eq!((r.status, r.json["idempotent"].clone()), (200, json!(true)), "{}", r.text);
    let (headers, body) = wait_for("the notification", &gw, || async { recv.received().first().cloned() }).await;
    assert!(signed_with(&secret, &headers, &body), "signature");
    let note: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((note["type"].as_str(), note["event_id"].as_str()), (Some("crm.tracked"), Some(event_id.as_str())), "{note}");
    assert!(!String::from_utf8_lossy(&body).contains("ada@"), "{note}");
    assert_eq!(jobs_of(&pool, &org, "notify").await, 1, "the replay enqueued nothing");

    // Cleared: the URL and its secret.
    let r = send(&gw, "PUT", &admin, "/v1/settings", Some(json!({"notify_url": null}))).await;
    assert_eq!((r.status, r.json["notify_url"].clone()), (200, Value::Null), "{}", r.text);
    let cleared: Option<Vec<u8>> = sqlx::query_scalar("SELECT notify_secret FROM tenant_settings WHERE tenant_id = $1::uuid").bind(&org).fetch_one(&pool).await.unwrap();
    assert!(cleared.is_none());

    // Another org: its own defaults.
    let other = gw.create_org("Other", None).await;
    let (stranger, _, _) = gw.create_token(&other, "admin", "admin@other.test").await;
    let r = send(&gw, "GET", &stranger, "/v1/settings", None).await;
    assert_eq!(r.json["require_manual_approval"], true, "{}", r.text);
    let logs = format!("{}{}", gw.stdout(), gw.stderr());
    assert!(!logs.contains(&secret[6..]) && !logs.contains("/hooks/gateway"), "the secret or the URL is in the logs");
}

#[tokio::test]
async fn a_reply_runs_its_chain_once_and_a_failing_step_never_touches_the_crm_write() {
    let fake = Fake::start("smartlead").await;
    let db = TestDb::new().await;
    let gw = start(&db, false).await;
    let org = onboard(&gw, &fake, "Acme").await;
    let (id, provider_id) = campaign(&gw, &fake, &org, "Spring launch", 1).await;
    let recv = Receiver::start().await;
    let r = send(&gw, "PUT", &org.admin, "/v1/settings", Some(json!({"notify_url": recv.url}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let secret = r.json["notify_secret"].as_str().unwrap().to_string();
    let pool = db.owner_pool().await;

    // The same reply twice: one CRM event, one job per chain step.
    for _ in 0..2 {
        let delivered = fake.send_reply(&provider_id, "msg-1").await;
        assert!(!delivered.is_empty() && delivered.iter().all(|s| *s == 200), "{delivered:?}");
    }
    let (headers, body) = wait_for("the notification", &gw, || async { recv.received().first().cloned() }).await;
    assert!(signed_with(&secret, &headers, &body), "signature");
    let note: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((note["type"].as_str(), note["campaign_id"].as_str()), (Some("reply.received"), Some(id.as_str())), "{note}");
    assert!(note["lead_id"].is_string() && note["event_id"].is_string() && note["occurred_at"].is_string(), "{note}");
    let text = String::from_utf8_lossy(&body).to_lowercase();
    assert!(!text.contains('@') && !text.contains("sounds good"), "no address or message text: {text}");
    // Both deliveries are processed (the second as a duplicate) before the counts are final.
    wait_for("both webhook jobs", &gw, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1::uuid AND kind = 'webhook' AND status = 'done'")
            .bind(&org.id).fetch_one(&pool).await.unwrap();
        (n >= 1).then_some(())
    })
    .await;
    for kind in ["stats", "optimizer", "notify"] {
        assert_eq!(jobs_of(&pool, &org.id, kind).await, 1, "{kind}");
    }
    let stats = wait_for("step stats", &gw, || async {
        let replied: Option<i64> = sqlx::query_scalar("SELECT sum(replied) FROM campaign_step_stats WHERE tenant_id = $1::uuid AND campaign_id = $2::uuid")
            .bind(&org.id).bind(&id).fetch_one(&pool).await.unwrap();
        replied.filter(|n| *n >= 1)
    })
    .await;
    assert_eq!(stats, 1);
    // The adapter runs the same event again (a lease lost after its commit, say): it says
    // `duplicate`, and no step is enqueued twice.
    let finished: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE jobs SET status = 'pending', run_at = now(), attempts = 0, finished_at = NULL \
         WHERE tenant_id = $1::uuid AND kind = 'webhook' RETURNING updated_at",
    )
    .bind(&org.id).fetch_one(&pool).await.unwrap();
    wait_for("the event's second run", &gw, || async {
        let done: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT finished_at FROM jobs WHERE tenant_id = $1::uuid AND kind = 'webhook' AND status = 'done'",
        )
        .bind(&org.id).fetch_optional(&pool).await.unwrap().flatten();
        done.filter(|d| *d > finished).map(|_| ())
    })
    .await;
    for kind in ["stats", "optimizer", "notify"] {
        assert_eq!(jobs_of(&pool, &org.id, kind).await, 1, "{kind} after the re-run");
    }
    let runs = send(&gw, "GET", &org.member, "/v1/agent-runs?kind=stats", None).await;
    assert_eq!(runs.status, 200, "{}", runs.text);
    assert_eq!(runs.json["agent_runs"][0]["status"], "succeeded", "{}", runs.text);
    assert!(runs.json["agent_runs"][0]["output"]["steps"].as_u64().is_some(), "{}", runs.text);

    // The tenant's webhook fails: the notify job fails and retries, visibly; the CRM write and
    // the reply stand.
    recv.status.store(500, Ordering::SeqCst);
    let delivered = fake.send_reply(&provider_id, "msg-2").await;
    assert!(delivered.iter().all(|s| *s == 200), "{delivered:?}");
    let failed = wait_for("two failed notify attempts", &gw, || async {
        let r = send(&gw, "GET", &org.member, "/v1/agent-runs?kind=notify&status=failed", None).await;
        r.json["agent_runs"].as_array().filter(|a| a.len() >= 2).cloned()
    })
    .await;
    assert!(failed.iter().all(|r| r["error"].as_str().is_some_and(|e| e.contains("500"))), "{failed:?}");
    let job = failed[0]["job_id"].as_str().unwrap();
    let by_job = send(&gw, "GET", &org.member, &format!("/v1/agent-runs?job_id={job}"), None).await;
    assert!(by_job.json["agent_runs"].as_array().unwrap().iter().all(|r| r["job_id"] == job), "{}", by_job.text);
    let replies = send(&gw, "GET", &org.member, &format!("/v1/campaigns/{id}/replies"), None).await;
    assert_eq!(replies.json["replies"].as_array().map(Vec::len), Some(2), "{}", replies.text);
    let events = send(&gw, "GET", &org.member, "/v1/crm/events", None).await;
    let n = events.json["events"].as_array().map(|a| a.iter().filter(|e| e["type"] == "email.replied").count());
    assert_eq!(n, Some(2), "{}", events.text);
    for kind in ["stats", "optimizer", "notify"] {
        assert_eq!(jobs_of(&pool, &org.id, kind).await, 2, "{kind}");
    }

    // Bad filters, and another org: nothing.
    assert_error(&send(&gw, "GET", &org.member, "/v1/agent-runs?status=done", None).await, 400, "VALIDATION_FAILED");
    assert_error(&send(&gw, "GET", &org.member, "/v1/agent-runs?job_id=x", None).await, 400, "VALIDATION_FAILED");
    assert_error(&send(&gw, "GET", &org.member, "/v1/agent-runs?limit=0", None).await, 400, "VALIDATION_FAILED");
    let other = gw.create_org("Other", Some("unmetered")).await;
    let (stranger, _, _) = gw.create_token(&other, "admin", "admin@other.test").await;
    for path in ["/v1/agent-runs".to_string(), format!("/v1/agent-runs?job_id={job}")] {
        let r = send(&gw, "GET", &stranger, &path, None).await;
        assert_eq!((r.status, r.json["agent_runs"].as_array().map(Vec::len)), (200, Some(0)), "{path}: {}", r.text);
    }
    assert_eq!(send(&gw, "GET", &stranger, "/v1/settings", None).await.json["notify_url"], Value::Null);
}

#[tokio::test]
async fn two_replicas_run_a_schedule_slot_once_and_a_recent_run_skips_one() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let mut second = GatewayOptions::new(&db);
    second.bootstrap_token = Some(gw.super_token.clone());
    let gw2 = Gateway::start_with(second).await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
    let (member, _, _) = gw.create_token(&org, "member", "member@acme.test").await;
    let path = "/v1/schedules/optimizer";

    // The API: validation, 404 before a schedule exists, another kind never exists.
    assert_error(&send(&gw, "GET", &member, path, None).await, 404, "NOT_FOUND");
    assert_error(&send(&gw, "GET", &member, "/v1/schedules/other", None).await, 404, "NOT_FOUND");
    assert_error(&send(&gw, "PUT", &member, path, Some(json!({"cron": "0 9 * * *", "timezone": "UTC"}))).await, 403, "FORBIDDEN");
    for (body, field) in [
        (json!({"cron": "0 0 9 * * *", "timezone": "UTC"}), "cron"),
        (json!({"cron": "0 9 * * * 2030", "timezone": "UTC"}), "cron"),
        (json!({"cron": "0 9 * *", "timezone": "UTC"}), "cron"),
        (json!({"cron": "99 9 * * *", "timezone": "UTC"}), "cron"),
        (json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}), "timezone"),
        (json!({"cron": "0 9 * * *"}), "timezone"),
    ] {
        let r = send(&gw, "PUT", &admin, path, Some(body.clone())).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    let r = send(&gw, "PUT", &admin, path, Some(json!({"cron": "0 9 1 1 *", "timezone": "Europe/Berlin"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let next: chrono::DateTime<chrono::Utc> = r.json["next_run_at"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now(), "{}", r.text);
    assert_eq!(send(&gw2, "GET", &member, path, None).await.json["cron"], "0 9 1 1 *");

    // A slot forced into the past: both replicas' schedulers see it; one runs it.
    let pool = db.owner_pool().await;
    let slot: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("UPDATE schedules SET next_run_at = date_trunc('minute', now()) - interval '1 minute' WHERE tenant_id = $1::uuid RETURNING next_run_at")
            .bind(&org).fetch_one(&pool).await.unwrap();
    let moved_on = || async {
        let n: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT next_run_at FROM schedules WHERE tenant_id = $1::uuid").bind(&org).fetch_one(&pool).await.unwrap();
        n.filter(|n| *n > chrono::Utc::now()).map(|_| ())
    };
    wait_for("the slot", &gw, moved_on).await;
    // The same slot due again (a replica that read it before the claim, a restart): it is
    // recorded already, so nothing runs twice.
    sqlx::query("UPDATE schedules SET next_run_at = $2 WHERE tenant_id = $1::uuid").bind(&org).bind(slot).execute(&pool).await.unwrap();
    wait_for("the slot again", &gw, moved_on).await;
    let runs: Vec<(chrono::DateTime<chrono::Utc>, String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT slot, outcome, job_id FROM schedule_runs WHERE tenant_id = $1::uuid").bind(&org).fetch_all(&pool).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].0, runs[0].1.as_str()), (slot, "enqueued"));
    assert_eq!(jobs_of(&pool, &org, "optimizer").await, 1);
    let payload: Value = sqlx::query_scalar("SELECT payload FROM jobs WHERE id = $1").bind(runs[0].2.unwrap()).fetch_one(&pool).await.unwrap();
    assert_eq!(payload["trigger"], "schedule", "{payload}");

    // The next slot while that run is recent: skipped, with an agent_runs row saying why.
    sqlx::query("UPDATE schedules SET next_run_at = $2 + interval '30 seconds' WHERE tenant_id = $1::uuid").bind(&org).bind(slot).execute(&pool).await.unwrap();
    let skipped = wait_for("the skipped run", &gw, || async {
        let r = send(&gw2, "GET", &member, "/v1/agent-runs?status=skipped", None).await;
        r.json["agent_runs"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!((skipped["kind"].as_str(), skipped["input"]["trigger"].as_str()), (Some("optimizer"), Some("schedule")), "{skipped}");
    assert!(skipped["output"]["skipped"].as_str().is_some_and(|s| s.contains("run")), "{skipped}");
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM schedule_runs WHERE tenant_id = $1::uuid ORDER BY slot").bind(&org).fetch_all(&pool).await.unwrap();
    assert_eq!(outcomes, ["enqueued", "skipped"]);
    assert_eq!(jobs_of(&pool, &org, "optimizer").await, 1, "a skipped slot enqueues nothing");

    // Another org sees none of it; delete is the org's own.
    let other = gw.create_org("Other", None).await;
    let (stranger, _, _) = gw.create_token(&other, "admin", "admin@other.test").await;
    assert_error(&send(&gw, "GET", &stranger, path, None).await, 404, "NOT_FOUND");
    assert_error(&send(&gw, "DELETE", &stranger, path, None).await, 404, "NOT_FOUND");
    let r = send(&gw, "GET", &stranger, "/v1/agent-runs", None).await;
    assert_eq!(r.json["agent_runs"].as_array().map(Vec::len), Some(0), "{}", r.text);
    assert_eq!(send(&gw, "DELETE", &admin, path, None).await.status, 204);
    assert_error(&send(&gw, "GET", &member, path, None).await, 404, "NOT_FOUND");
    drop(gw2);
}
