//! The provider adapter plugins (`plugins/smartlead`, `plugins/heyreach`) on their own,
//! through the real gateway, PostgreSQL and loopback sockets: a test policy exposes each
//! adapter's two entry points (`…/provider/{op}`, `…/webhooks/{provider}`) on admin routes,
//! with the grants of `policies/providers.toml` but an allowlisted loopback fake instead of
//! a credential. The fake records every call and answers in the providers' published shapes,
//! or with a forced status (429, 5xx, 4xx).
//!
//! What this proves about the adapters: the calls they make (paths, bodies, batch caps,
//! pause around a sequence edit, no credential of their own in any URL or header), what they
//! write (provider ids, `sync_status`, `sync_error`), how provider answers become the job's
//! outcome, and webhook normalisation (both spellings, once per event key, the CRM event
//! first and without the message text). The end-to-end suite through jobs, credential
//! injection and webhook verification builds on the neighbouring parts.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{assert_error, repo_policies, tempdir, Gateway, GatewayOptions, Resp, TestDb};

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Value,
}

type Forced = (u16, Vec<(&'static str, String)>, Value);

/// A fake Smartlead and HeyReach on one loopback port (their paths do not overlap), under
/// `/api/v1` and `/api/public`.
struct Fake {
    addr: SocketAddr,
    /// Calls since the last [`Fake::take`].
    calls: Arc<Mutex<Vec<Call>>>,
    /// Every call taken so far.
    seen: Mutex<Vec<Call>>,
    forced: Arc<Mutex<VecDeque<Forced>>>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let forced: Arc<Mutex<VecDeque<Forced>>> = Arc::default();
        let (c, f) = (calls.clone(), forced.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (c, f) = (c.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (c, f) = (c.clone(), f.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let call = Call {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or_default().to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                                    .collect(),
                                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                            };
                            let n = c.lock().unwrap().len();
                            let (status, headers, answer) = f.lock().unwrap().pop_front().unwrap_or_else(|| (200, vec![], published(&call, n)));
                            c.lock().unwrap().push(call);
                            let mut resp = http::Response::builder().status(status).header("content-type", "application/json");
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(http_body_util::Full::new(bytes::Bytes::from(answer.to_string()))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                });
            }
        });
        Fake { addr, calls, seen: Mutex::default(), forced }
    }

    fn force(&self, status: u16, headers: Vec<(&'static str, String)>, body: Value) {
        self.forced.lock().unwrap().push_back((status, headers, body));
    }

    fn take(&self) -> Vec<Call> {
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        self.seen.lock().unwrap().extend(calls.iter().cloned());
        calls
    }

    /// Every call so far (taken or not).
    fn everything(&self) -> Vec<Call> {
        self.take();
        self.seen.lock().unwrap().clone()
    }
}

/// The published answer shapes (docs of both providers; see the reference notes).
fn published(c: &Call, n: usize) -> Value {
    let p = c.path.as_str();
    let seg: Vec<&str> = p.split('/').collect();
    match (c.method.as_str(), p) {
        ("GET", "/api/v1/campaigns") => json!([]),
        ("POST", "/api/v1/campaigns/create") => json!({"ok": true, "id": 1001, "name": c.body["name"], "created_at": "2024-05-01T10:00:00Z"}),
        ("GET", "/api/v1/email-accounts/") => json!([
            {"id": 1, "from_email": "s1@acme.test", "from_name": "S One", "is_smtp_success": true, "is_imap_success": true},
            {"id": 2, "from_email": "s2@acme.test", "from_name": "S Two", "is_smtp_success": false, "is_imap_success": true},
        ]),
        ("GET", "/api/v1/leads/") => json!({"id": 8800, "email": "x"}),
        ("POST", "/api/v1/webhook/create") => json!({"ok": true, "id": 77}),
        ("GET", _) if p.ends_with("/sequences") => json!([{"id": 501, "seq_number": 1, "subject": "old"}]),
        ("POST", _) if p.ends_with("/leads") && seg.len() == 6 => {
            json!({"ok": true, "upload_count": c.body["lead_list"].as_array().map_or(0, Vec::len)})
        }
        ("GET", "/api/public/auth/CheckApiKey") => Value::Null,
        ("POST", "/api/public/webhooks/CreateWebhook") => json!({"id": 900 + n}),
        ("POST", "/api/public/li_account/GetAll") => json!({"totalCount": 2, "items": [
            {"id": 11, "emailAddress": "li1@acme.test", "firstName": "Li", "lastName": "One", "isActive": true, "authIsValid": true},
            {"id": 12, "emailAddress": "li2@acme.test", "firstName": "Li", "lastName": "Two", "isActive": true, "authIsValid": true},
        ]}),
        ("POST", "/api/public/campaign/GetAllCampaigns") => json!({"totalCount": 1, "items": [{"id": 314, "name": "Q3 LinkedIn", "status": "DRAFT"}]}),
        ("POST", "/api/public/campaign/AddLeadsToCampaignV2") => {
            json!({"addedLeadsCount": c.body["accountLeadPairs"].as_array().map_or(0, Vec::len), "updatedLeadsCount": 0, "failedLeadsCount": 0})
        }
        _ => json!({"ok": true}),
    }
}

struct Rig {
    _db: TestDb,
    pool: PgPool,
    gw: Gateway,
    fake: Fake,
    org: String,
    token: String,
}

const TABLES: &str = "tables = { campaigns = \"write\", campaign_sequences = \"write\", campaign_leads = \"write\", \
    campaign_messages = \"write\", campaign_activity = \"write\", inboxes = \"write\", provisioning = \"write\", \
    crm_contacts = \"write\", contact_identities = \"write\", crm_events = \"write\", crm_outbox = \"write\" }";

/// The repository's policies without `providers.toml` (whose `credentials` grants and
/// event-key alternatives come with the neighbouring parts), plus routes exposing both
/// adapters with its grants and the fake allowlisted.
fn adapter_policies(port: u16) -> std::path::PathBuf {
    let dir = tempdir("gwp");
    for e in std::fs::read_dir(repo_policies()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "providers.toml" {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut text = String::new();
    for name in ["smartlead", "heyreach"] {
        text.push_str(&format!("[plugins.{name}]\nfile = \"{name}.wasm\"\nversion = \"0.1.0\"\n\n"));
        for (kind, path) in [("job", "provider/{op}".to_string()), ("hook", format!("webhooks/{name}"))] {
            text.push_str(&format!(
                "[[route]]\nid = \"t_{name}_{kind}\"\nmethod = \"POST\"\npath = \"/v1/test/{name}/{path}\"\ntarget = \"plugin:{name}\"\n\
                 roles = [\"admin\"]\n\n[route.sandbox]\nmemory = \"32MiB\"\ncpu_ms = 2000\ntimeout_ms = 30000\n\n\
                 [route.grants]\n{TABLES}\nlocks = true\nhttp_timeout_ms = 10000\n\
                 hosts = [{{ url = \"http://127.0.0.1:{port}\", allow_private = true }}]\n\n"
            ));
        }
    }
    std::fs::write(dir.join("adapters.toml"), text).unwrap();
    dir
}

impl Rig {
    async fn start() -> Rig {
        let db = TestDb::new().await;
        let fake = Fake::start().await;
        let mut opts = GatewayOptions::new(&db);
        opts.policies = adapter_policies(fake.addr.port());
        let gw = Gateway::start_with(opts).await;
        let pool = db.owner_pool().await;
        let org = gw.create_org("Acme", Some("unmetered")).await;
        let (token, _, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
        Rig { _db: db, pool, gw, fake, org, token }
    }

    fn base(&self, provider: &str) -> String {
        let path = if provider == "smartlead" { "/api/v1" } else { "/api/public" };
        format!("http://{}{path}", self.fake.addr)
    }

    async fn job(&self, provider: &str, op: &str, mut body: Value) -> Resp {
        body["op"] = op.into();
        body["provider"] = provider.into();
        body["base_url"] = self.base(provider).into();
        self.gw.req("POST", &format!("/v1/test/{provider}/provider/{op}")).token(&self.token).json(&body).send().await
    }

    async fn hook(&self, provider: &str, key: &str, body: Value) -> Resp {
        self.gw
            .req("POST", &format!("/v1/test/{provider}/webhooks/{provider}"))
            .token(&self.token)
            .header("webhook-event-key", key)
            .header("webhook-event-id", &Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
    }

    async fn sql(&self, sql: &str) {
        sqlx::raw_sql(&sql.replace("{org}", &self.org)).execute(&self.pool).await.unwrap();
    }

    async fn n(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn campaign(&self, name: &str, channel: &str, provider: &str, provider_id: Option<&str>) -> String {
        let id = Uuid::new_v4().to_string();
        let pid = provider_id.map_or("NULL".into(), |p| format!("'{p}'"));
        let synced = if provider_id.is_some() { "synced" } else { "pending" };
        self.sql(&format!(
            "INSERT INTO campaigns (id, tenant_id, name, channel, provider, provider_id, sync_status) \
             VALUES ('{id}', '{{org}}', '{name}', '{channel}', '{provider}', {pid}, '{synced}')"
        ))
        .await;
        id
    }

    /// Pending leads numbered `range`: emails `lead<i>@x.test`, or profile URLs `…/in/lead<i>`
    /// for LinkedIn.
    async fn leads(&self, campaign: &str, range: std::ops::Range<usize>, linkedin: bool) -> Vec<String> {
        let ids: Vec<String> = range.clone().map(|_| Uuid::new_v4().to_string()).collect();
        let rows: Vec<String> = ids
            .iter()
            .zip(range)
            .map(|(id, i)| {
                if linkedin {
                    format!("('{id}', '{{org}}', '{campaign}', 'https://www.linkedin.com/in/lead{i}', NULL, 'https://www.linkedin.com/in/lead{i}', 'Lee', 'Acme{i}')")
                } else {
                    format!("('{id}', '{{org}}', '{campaign}', 'lead{i}@x.test', 'lead{i}@x.test', NULL, 'Ann', 'Acme{i}')")
                }
            })
            .collect();
        self.sql(&format!(
            "INSERT INTO campaign_leads (id, tenant_id, campaign_id, identity, email, profile_url, first_name, company) VALUES {}",
            rows.join(",")
        ))
        .await;
        ids
    }
}

/// No call carries a credential the adapter made up: the host alone adds it.
fn assert_no_credential(calls: &[Call]) {
    for c in calls {
        assert!(!c.query.to_ascii_lowercase().contains("api_key"), "{c:?}");
        assert!(!c.headers.contains_key("x-api-key"), "{c:?}");
    }
}

fn paths(calls: &[Call]) -> Vec<String> {
    calls.iter().map(|c| format!("{} {}", c.method, c.path)).collect()
}

#[tokio::test]
async fn smartlead_sync_ops_make_the_published_calls_and_record_the_outcome() {
    let r = Rig::start().await;
    let c = r.campaign("Q3 Email", "email", "smartlead", None).await;
    let campaign = |col: &str| format!("SELECT {col} FROM campaigns WHERE id = '{c}'");

    // create_campaign: the provider's id and `synced`; a retry creates nothing more.
    let a = r.job("smartlead", "create_campaign", json!({"campaign_id": c})).await;
    assert_eq!((a.status, &a.json["provider_id"]), (200, &json!("1001")), "{}", a.text);
    assert_eq!(r.text(&campaign("provider_id")).await.as_deref(), Some("1001"));
    assert_eq!(r.text(&campaign("sync_status")).await.as_deref(), Some("synced"));
    let calls = r.fake.take();
    assert_eq!(paths(&calls), ["POST /api/v1/campaigns/create"]);
    assert_eq!(calls[0].body, json!({"name": "Q3 Email"}));
    assert_eq!(r.job("smartlead", "create_campaign", json!({"campaign_id": c})).await.status, 200);
    assert!(r.fake.take().is_empty(), "a retried create called the provider again");

    // add_leads: 450 leads go 400 then 50; each lead `synced`; a second run sends nothing.
    let leads = r.leads(&c, 0..450, false).await;
    let a = r.job("smartlead", "add_leads", json!({"campaign_id": c, "lead_ids": leads})).await;
    assert_eq!((a.status, &a.json["added"]), (200, &json!(450)), "{}", a.text);
    let calls = r.fake.take();
    let sizes: Vec<usize> = calls.iter().map(|c| c.body["lead_list"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [400, 50]);
    assert!(calls.iter().all(|x| x.path == "/api/v1/campaigns/1001/leads"));
    assert_eq!(calls[0].body["lead_list"][0], json!({"email": "lead0@x.test", "first_name": "Ann", "last_name": null, "company_name": "Acme0", "custom_fields": {}}));
    assert_eq!(calls[0].body["settings"]["ignore_global_block_list"], false);
    assert_eq!(r.n(&format!("SELECT count(*) FROM campaign_leads WHERE campaign_id = '{c}' AND sync_status = 'synced'")).await, 450);
    let a = r.job("smartlead", "add_leads", json!({"campaign_id": c, "lead_ids": leads[..3]})).await;
    assert_eq!((a.status, &a.json["added"], &a.json["already"]), (200, &json!(0), &json!(3)), "{}", a.text);
    assert!(r.fake.take().is_empty());

    // put_sequence on an active campaign: pause, save (existing step ids kept), start again.
    r.sql(&format!(
        "UPDATE campaigns SET status = 'active' WHERE id = '{c}';
         INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ('{{org}}', '{c}', 1,
           '[{{\"subject\": \"Hi\", \"body\": \"First\", \"delay_days\": 0}}, {{\"subject\": \"Re: Hi\", \"body\": \"Second\", \"delay_days\": 3}}]')"
    ))
    .await;
    let a = r.job("smartlead", "put_sequence", json!({"campaign_id": c, "version": 1})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let calls = r.fake.take();
    assert_eq!(
        paths(&calls),
        [
            "GET /api/v1/campaigns/1001/sequences",
            "POST /api/v1/campaigns/1001/status",
            "POST /api/v1/campaigns/1001/sequences",
            "POST /api/v1/campaigns/1001/status"
        ]
    );
    assert_eq!((&calls[1].body, &calls[3].body), (&json!({"status": "PAUSED"}), &json!({"status": "START"})));
    assert_eq!(
        calls[2].body["sequences"],
        json!([
            {"id": 501, "seq_number": 1, "subject": "Hi", "email_body": "First", "seq_delay_details": {"delay_in_days": 0}},
            {"id": null, "seq_number": 2, "subject": "Re: Hi", "email_body": "Second", "seq_delay_details": {"delay_in_days": 3}},
        ])
    );
    assert_eq!(r.text(&format!("SELECT sync_status FROM campaign_sequences WHERE campaign_id = '{c}' AND version = 1")).await.as_deref(), Some("synced"));

    // A refused save still starts the campaign again, and is recorded on the version.
    r.sql(&format!("INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ('{{org}}', '{c}', 2, '[]')")).await;
    r.fake.force(200, vec![], json!([]));
    r.fake.force(200, vec![], json!({"ok": true}));
    r.fake.force(400, vec![], json!({"message": "At least one sequence is required"}));
    let a = r.job("smartlead", "put_sequence", json!({"campaign_id": c, "version": 2})).await;
    assert_eq!((a.status, &a.json["ok"]), (200, &json!(false)), "{}", a.text);
    let calls = r.fake.take();
    assert_eq!(calls.last().unwrap().body, json!({"status": "START"}));
    assert_eq!(
        r.text(&format!("SELECT sync_error FROM campaign_sequences WHERE campaign_id = '{c}' AND version = 2")).await.as_deref(),
        Some("PROVIDER_REJECTED: 400 At least one sequence is required")
    );

    // set_status: 429 is answered 429 with the provider's wait and writes nothing; without a
    // wait, 30 s; 5xx is unavailable (retried); another 4xx is recorded and finishes the job.
    r.sql(&format!("UPDATE campaigns SET status = 'paused', sync_status = 'pending' WHERE id = '{c}'")).await;
    r.fake.force(429, vec![("retry-after", "7".into())], json!({"message": "slow down"}));
    let a = r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "paused"})).await;
    assert_eq!((a.status, a.header("retry-after")), (429, Some("7")), "{}", a.text);
    r.fake.force(429, vec![], json!({}));
    let a = r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "paused"})).await;
    assert_eq!((a.status, a.header("retry-after")), (429, Some("30")), "{}", a.text);
    r.fake.force(503, vec![], json!({}));
    assert_error(&r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "paused"})).await, 503, "UNAVAILABLE");
    assert_eq!(r.text(&campaign("sync_status")).await.as_deref(), Some("pending"));
    r.fake.force(400, vec![], json!({"message": "Campaign cannot be paused\nnow"}));
    let a = r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "paused"})).await;
    assert_eq!((a.status, &a.json["sync_error"]), (200, &json!("PROVIDER_REJECTED: 400 Campaign cannot be paused now")), "{}", a.text);
    assert_eq!(r.text(&campaign("sync_status")).await.as_deref(), Some("failed"));
    r.fake.take();
    let a = r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "paused"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(r.fake.take().iter().map(|c| c.body.clone()).collect::<Vec<_>>(), [json!({"status": "PAUSED"})]);
    assert_eq!(r.text(&campaign("sync_status")).await.as_deref(), Some("synced"));
    assert_eq!(r.text(&campaign("sync_error")).await, None);

    // stopped is STOPPED (the local status wins over a late job's).
    r.sql(&format!("UPDATE campaigns SET status = 'stopped' WHERE id = '{c}'")).await;
    assert_eq!(r.job("smartlead", "set_status", json!({"campaign_id": c, "status": "active"})).await.status, 200);
    assert_eq!(r.fake.take()[0].body, json!({"status": "STOPPED"}));

    // lead_action on a lead whose Smartlead id is unknown: looked up by email, then kept.
    let a = r.job("smartlead", "lead_action", json!({"campaign_id": c, "lead_id": leads[0], "action": "unsubscribe"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let calls = r.fake.take();
    assert_eq!(paths(&calls), ["GET /api/v1/leads/", "POST /api/v1/campaigns/1001/leads/8800/unsubscribe"]);
    assert_eq!(calls[0].query, "email=lead0%40x.test");
    assert_eq!(r.text(&format!("SELECT provider_id FROM campaign_leads WHERE id = '{}'", leads[0])).await.as_deref(), Some("8800"));
    assert_eq!(r.job("smartlead", "lead_action", json!({"campaign_id": c, "lead_id": leads[0], "action": "resume"})).await.status, 200);
    let calls = r.fake.take();
    assert_eq!(paths(&calls), ["POST /api/v1/campaigns/1001/leads/8800/resume"]);
    assert_eq!(calls[0].body, json!({"resume_lead_with_delay_days": 0}));

    // A refused batch marks its leads failed; the others of the job are unaffected.
    let more = r.leads(&c, 450..452, false).await;
    r.fake.force(422, vec![], json!({"error": "Invalid lead list"}));
    let a = r.job("smartlead", "add_leads", json!({"campaign_id": c, "lead_ids": more})).await;
    assert_eq!((a.status, &a.json["rejected"]), (200, &json!(2)), "{}", a.text);
    assert_eq!(
        r.n("SELECT count(*) FROM campaign_leads WHERE sync_status = 'failed' AND sync_error = 'PROVIDER_REJECTED: 422 Invalid lead list'").await,
        2
    );

    // provision: key checked, one user-level webhook for the normalised events, inboxes.
    r.sql("INSERT INTO org_capabilities (tenant_id, capability, provider) VALUES ('{org}', 'email_outreach', 'smartlead');
           INSERT INTO provisioning (tenant_id, capability, provider, status) VALUES ('{org}', 'email_outreach', 'smartlead', 'pending')")
        .await;
    r.fake.take();
    let a = r.job("smartlead", "provision", json!({"webhook_url": "https://gw.test/v1/webhooks/e1"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let calls = r.fake.take();
    assert_eq!(paths(&calls), ["GET /api/v1/campaigns", "POST /api/v1/webhook/create", "GET /api/v1/email-accounts/"]);
    assert_eq!(calls[1].body["webhook_url"], "https://gw.test/v1/webhooks/e1");
    assert_eq!(calls[1].body["association_type"], "user");
    assert_eq!(calls[1].body["event_type_map"]["EMAIL_REPLY"], true);
    assert_eq!(calls[2].query, "offset=0&limit=100");
    assert_eq!(r.text("SELECT status || ' ' || provider_webhook_id FROM provisioning").await.as_deref(), Some("ready 77"));
    assert_eq!(r.n("SELECT count(*) FROM inboxes WHERE provider = 'smartlead'").await, 2);
    assert_eq!(r.text("SELECT status FROM inboxes WHERE provider_id = '2'").await.as_deref(), Some("error"));
    assert_no_credential(&r.fake.everything());

    // A key the provider refuses: provisioning failed with the reason.
    r.sql("UPDATE provisioning SET status = 'pending', provider_webhook_id = NULL").await;
    r.fake.force(401, vec![], json!({"message": "Invalid API key"}));
    let a = r.job("smartlead", "provision", json!({"webhook_url": "https://gw.test/v1/webhooks/e1"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(r.text("SELECT status || ' ' || reason FROM provisioning").await.as_deref(), Some("failed PROVIDER_REJECTED: 401 Invalid API key"));
}

#[tokio::test]
async fn smartlead_webhooks_are_normalised_once_with_the_crm_event_first() {
    let r = Rig::start().await;
    let c = r.campaign("Q3 Email", "email", "smartlead", Some("1001")).await;
    let leads = r.leads(&c, 0..2, false).await;
    let reply = |spelling: &str, t: &str| {
        json!({
            spelling: t, "campaign_id": 1001, "sequence_number": 2, "sl_email_lead_id": 77, "sl_lead_email": "Lead0@X.test",
            "subject": "Re: Hi", "secret_key": "whsec", "event_timestamp": "2024-05-01T10:00:00Z",
            "reply_message": {"message_id": "<r1@x.test>", "text": "Sounds good, call me", "time": "2024-05-01T10:00:00Z"},
        })
    };
    let a = r.hook("smartlead", "<r1@x.test>:EMAIL_REPLIED", reply("event", "EMAIL_REPLIED")).await;
    assert_eq!((a.status, &a.json["kind"], &a.json["duplicate"]), (200, &json!("reply.received"), &json!(false)), "{}", a.text);
    assert_eq!(a.json["lead_id"], json!(leads[0]));
    let counts = || async {
        (
            r.n("SELECT count(*) FROM crm_events").await,
            r.n("SELECT count(*) FROM campaign_messages").await,
            r.n("SELECT count(*) FROM campaign_activity").await,
        )
    };
    assert_eq!(counts().await, (1, 1, 1));
    assert_eq!(r.text("SELECT type FROM crm_events").await.as_deref(), Some("email.replied"));
    let props: Value = sqlx::query_scalar("SELECT props FROM crm_events").fetch_one(&r.pool).await.unwrap();
    assert_eq!(props["campaign_id"], json!(c));
    assert_eq!(props["lead_id"], json!(leads[0]));
    assert_eq!(props["provider_message_id"], "<r1@x.test>");
    assert!(!props.to_string().contains("Sounds good"), "the CRM event carries the message text: {props}");
    assert_eq!(r.n("SELECT count(*) FROM contact_identities WHERE type = 'email' AND value = 'lead0@x.test'").await, 1);
    assert_eq!(r.n("SELECT count(*) FROM crm_outbox WHERE topic = 'event.tracked.v1'").await, 1);
    assert_eq!(
        r.text("SELECT direction || '|' || body || '|' || seq_number || '|' || (occurred_at = '2024-05-01T10:00:00Z') FROM campaign_messages")
            .await
            .as_deref(),
        Some("inbound|Sounds good, call me|2|true")
    );
    assert_eq!(
        r.text(&format!("SELECT status || ' ' || provider_id FROM campaign_leads WHERE id = '{}'", leads[0])).await.as_deref(),
        Some("replied 77")
    );

    // The same event again (a replay, or the other spelling under the same key): nothing new.
    let a = r.hook("smartlead", "<r1@x.test>:EMAIL_REPLIED", reply("event_type", "EMAIL_REPLY")).await;
    assert_eq!((a.status, &a.json["duplicate"]), (200, &json!(true)), "{}", a.text);
    assert_eq!(counts().await, (1, 1, 1));

    // Opens carry no message id (their key falls back); sends are outbound messages.
    let open = json!({"event_type": "EMAIL_OPEN", "campaign_id": "1001", "stats_id": "st-1", "to_email": "lead1@x.test", "sequence_number": 1});
    assert_eq!(r.hook("smartlead", "st-1:EMAIL_OPEN", open).await.json["kind"], "message.opened");
    let sent = json!({"event_type": "EMAIL_SENT", "campaign_id": 1001, "stats_id": "st-1", "to_email": "lead1@x.test", "sequence_number": 1,
                      "subject": "Hi", "sent_message": {"message_id": "<s1@x.test>", "text": "First"}});
    assert_eq!(r.hook("smartlead", "st-1:EMAIL_SENT", sent).await.json["kind"], "message.sent");
    assert_eq!(r.n("SELECT count(*) FROM campaign_messages WHERE direction = 'outbound' AND subject = 'Hi'").await, 1);
    assert_eq!(r.n(&format!("SELECT count(*) FROM campaign_activity WHERE lead_id = '{}' AND seq_number = 1", leads[1])).await, 2);

    // Bounces, unsubscribes and categories reach the lead; a bounced lead stays bounced.
    let lead1 = |col: &str| format!("SELECT {col} FROM campaign_leads WHERE id = '{}'", leads[1]);
    let cat = json!({"event_type": "LEAD_CATEGORY_UPDATED", "campaign_id": 1001, "sl_lead_email": "lead1@x.test", "lead_category": {"new_name": "Interested"}});
    assert_eq!(r.hook("smartlead", "cat-1", cat).await.status, 200);
    assert_eq!(r.text(&lead1("category")).await.as_deref(), Some("Interested"));
    let bounce = json!({"event": "EMAIL_BOUNCED", "campaign_id": 1001, "stats_id": "st-1", "sl_lead_email": "lead1@x.test"});
    assert_eq!(r.hook("smartlead", "st-1:EMAIL_BOUNCED", bounce).await.json["kind"], "bounced");
    let unsub = json!({"event_type": "LEAD_UNSUBSCRIBED", "campaign_id": 1001, "sl_lead_email": "lead1@x.test"});
    assert_eq!(r.hook("smartlead", "unsub-1", unsub).await.json["kind"], "unsubscribed");
    assert_eq!(r.text(&lead1("status")).await.as_deref(), Some("bounced"));

    // The provider completing the campaign is the campaign's status here too.
    let done = json!({"event_type": "CAMPAIGN_STATUS_CHANGED", "campaign_id": 1001, "campaign_status": "COMPLETED"});
    assert_eq!(r.hook("smartlead", "done-1", done).await.status, 200);
    assert_eq!(r.text(&format!("SELECT status FROM campaigns WHERE id = '{c}'")).await.as_deref(), Some("completed"));

    // Another campaign's events, and types outside the vocabulary, are acknowledged and ignored.
    let before = r.n("SELECT count(*) FROM campaign_activity").await;
    let a = r.hook("smartlead", "x-1", json!({"event_type": "EMAIL_REPLY", "campaign_id": 999, "sl_lead_email": "a@b.test"})).await;
    assert_eq!((a.status, &a.json["ignored"]), (200, &json!("no campaign with this provider id")), "{}", a.text);
    let a = r.hook("smartlead", "x-2", json!({"event_type": "MANUAL_STEP_REACHED", "campaign_id": 1001})).await;
    assert_eq!(a.json["ignored"], "event type not normalised");
    assert_eq!(r.n("SELECT count(*) FROM campaign_activity").await, before);
    assert_eq!(r.n("SELECT count(*) FROM crm_events").await, 1);
}

#[tokio::test]
async fn heyreach_links_campaigns_pairs_leads_with_senders_and_says_what_it_cannot_do() {
    let r = Rig::start().await;
    r.sql("INSERT INTO org_capabilities (tenant_id, capability, provider) VALUES ('{org}', 'linkedin_outreach', 'heyreach');
           INSERT INTO provisioning (tenant_id, capability, provider, status) VALUES ('{org}', 'linkedin_outreach', 'heyreach', 'pending')")
        .await;

    // provision: key check, one webhook per event type (the URL with its token), senders.
    let url = "https://gw.test/v1/webhooks/e2?secret=tok";
    let a = r.job("heyreach", "provision", json!({"webhook_url": url})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let calls = r.fake.take();
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].path, "/api/public/auth/CheckApiKey");
    let hooks: Vec<&Call> = calls.iter().filter(|c| c.path == "/api/public/webhooks/CreateWebhook").collect();
    assert_eq!(hooks.len(), 7);
    assert!(hooks.iter().all(|h| h.body["webhookUrl"] == url));
    assert!(hooks.iter().any(|h| h.body["eventType"] == "MESSAGE_REPLY_RECEIVED"));
    assert_eq!(calls.last().unwrap().path, "/api/public/li_account/GetAll");
    assert_eq!(r.text("SELECT status FROM provisioning").await.as_deref(), Some("ready"));
    assert_eq!(r.text("SELECT provider_webhook_id FROM provisioning").await.as_deref(), Some("901,902,903,904,905,906,907"));
    assert_eq!(r.n("SELECT count(*) FROM inboxes WHERE provider = 'heyreach' AND status = 'active'").await, 2);

    // HeyReach cannot create campaigns: one made there with the same name is linked, else
    // the campaign says why.
    let c = r.campaign("Q3 LinkedIn", "linkedin", "heyreach", None).await;
    let a = r.job("heyreach", "create_campaign", json!({"campaign_id": c})).await;
    assert_eq!((a.status, &a.json["provider_id"]), (200, &json!("314")), "{}", a.text);
    assert_eq!(r.fake.take()[0].body["keyword"], "Q3 LinkedIn");
    let other = r.campaign("Not there", "linkedin", "heyreach", None).await;
    let a = r.job("heyreach", "create_campaign", json!({"campaign_id": other})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let err = r.text(&format!("SELECT sync_status || ' ' || sync_error FROM campaigns WHERE id = '{other}'")).await.unwrap();
    assert!(err.starts_with("failed PROVIDER_UNSUPPORTED: HeyReach's public API cannot create campaigns"), "{err}");

    // add_leads: 150 leads go 100 then 50, each paired with a sender in turn; the profile URL
    // is the lead's id there.
    let leads = r.leads(&c, 0..150, true).await;
    r.fake.take();
    let a = r.job("heyreach", "add_leads", json!({"campaign_id": c, "lead_ids": leads})).await;
    assert_eq!((a.status, &a.json["added"]), (200, &json!(150)), "{}", a.text);
    let calls = r.fake.take();
    let sizes: Vec<usize> = calls.iter().map(|c| c.body["accountLeadPairs"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 50]);
    assert_eq!(calls[0].body["campaignId"], 314);
    let pairs = &calls[0].body["accountLeadPairs"];
    assert_eq!((&pairs[0]["linkedInAccountId"], &pairs[1]["linkedInAccountId"]), (&json!(11), &json!(12)));
    assert_eq!(pairs[0]["lead"]["profileUrl"], "https://www.linkedin.com/in/lead0");
    assert_eq!(pairs[0]["lead"]["firstName"], "Lee");
    assert_eq!(
        r.text(&format!("SELECT sync_status || ' ' || provider_id FROM campaign_leads WHERE id = '{}'", leads[0])).await.as_deref(),
        Some("synced https://www.linkedin.com/in/lead0")
    );

    // Sequences are not editable over HeyReach's public API: recorded, no call made.
    r.sql(&format!("INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ('{{org}}', '{c}', 1, '[]')")).await;
    let a = r.job("heyreach", "put_sequence", json!({"campaign_id": c, "version": 1})).await;
    assert_eq!((a.status, &a.json["ok"]), (200, &json!(false)), "{}", a.text);
    assert!(r.fake.take().is_empty());
    let err = r.text(&format!("SELECT sync_status || ' ' || sync_error FROM campaign_sequences WHERE campaign_id = '{c}'")).await.unwrap();
    assert!(err.starts_with("failed PROVIDER_UNSUPPORTED: HeyReach's public API cannot edit"), "{err}");

    // No stop at HeyReach: paused there, stopped here, and the answer says so.
    r.sql(&format!("UPDATE campaigns SET status = 'stopped' WHERE id = '{c}'")).await;
    let a = r.job("heyreach", "set_status", json!({"campaign_id": c, "status": "stopped"})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.json["note"].as_str().unwrap().contains("no stop"), "{}", a.text);
    let calls = r.fake.take();
    assert_eq!((paths(&calls), calls[0].query.as_str(), &calls[0].body), (vec!["POST /api/public/campaign/Pause".to_string()], "campaignId=314", &json!({"campaignId": 314})));

    // Unsubscribe stops the lead; per-lead pause does not exist there.
    assert_eq!(r.job("heyreach", "lead_action", json!({"campaign_id": c, "lead_id": leads[1], "action": "unsubscribe"})).await.status, 200);
    let calls = r.fake.take();
    assert_eq!(calls[0].path, "/api/public/campaign/StopLeadInCampaign");
    assert_eq!(calls[0].body["leadUrl"], "https://www.linkedin.com/in/lead1");
    let a = r.job("heyreach", "lead_action", json!({"campaign_id": c, "lead_id": leads[2], "action": "pause"})).await;
    assert_eq!((a.status, &a.json["ok"]), (200, &json!(false)), "{}", a.text);
    assert!(r.fake.take().is_empty());

    // A reply: matched by profile URL (with or without its trailing slash), a CRM event
    // `linkedin.replied` under the profile's external id.
    let reply = json!({
        "eventType": "MESSAGE_REPLY_RECEIVED", "campaign": {"id": 314, "name": "Q3 LinkedIn"},
        "leadProfile": {"linkedInUrl": "https://www.linkedin.com/in/lead3/", "firstName": "Lee"},
        "message": {"id": 4242, "text": "Happy to chat"}, "timestamp": "2024-05-01T10:00:00Z",
    });
    let a = r.hook("heyreach", "4242:MESSAGE_REPLY_RECEIVED", reply.clone()).await;
    assert_eq!((a.status, &a.json["lead_id"]), (200, &json!(leads[3])), "{}", a.text);
    assert_eq!(r.text("SELECT type FROM crm_events").await.as_deref(), Some("linkedin.replied"));
    assert_eq!(r.n("SELECT count(*) FROM contact_identities WHERE type = 'external_id' AND value = 'linkedin:https://www.linkedin.com/in/lead3'").await, 1);
    assert_eq!(r.text(&format!("SELECT status FROM campaign_leads WHERE id = '{}'", leads[3])).await.as_deref(), Some("replied"));
    assert_eq!(r.text("SELECT body FROM campaign_messages WHERE direction = 'inbound'").await.as_deref(), Some("Happy to chat"));
    assert_eq!(r.hook("heyreach", "4242:MESSAGE_REPLY_RECEIVED", reply).await.json["duplicate"], true);
    assert_eq!(r.n("SELECT count(*) FROM crm_events").await, 1);
    // Profile URLs match whatever their case.
    let accepted = json!({"eventType": "CONNECTION_REQUEST_ACCEPTED", "campaign": {"id": 314}, "leadProfile": {"linkedInUrl": "https://www.LinkedIn.com/in/Lead4"}});
    let a = r.hook("heyreach", "sha256:ab", accepted).await;
    assert_eq!((&a.json["kind"], &a.json["lead_id"]), (&json!("connection.accepted"), &json!(leads[4])), "{}", a.text);
    assert_no_credential(&r.fake.everything());
}
