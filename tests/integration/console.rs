//! The operator console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started here on a free port). Sign in, orgs, a plugin rolled back, a dead
//! letter replayed, counts that follow traffic, the optimizer's approval queue (reject and
//! approve through the confirmation), CSRF and session checks, cookie flags.
//! Screenshots are taken of every page; with `UPDATE_CONSOLE_SCREENSHOTS=1` they are written
//! to `docs/console/` (what docs/operations.md shows), otherwise to the test's data dir.
//!
//! Chromium and chromedriver are required (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs): without them this test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::harness::{plugin_dir, policies_with, tempdir, Gateway, GatewayOptions, TestDb};
use gateway::webhooks::verify::sign_standard;

/// A provider whose adapter always fails (the contract probe told to), with fast retries,
/// to make a dead letter; and a plan that rate-limits on the second request.
const POLICIES: &str = r#"
[plugins.flaky]
file = "contract_probe.wasm"

[providers.probe]
route = "webhook_probe"
max_attempts = 2
retry_base_ms = 20

[[route]]
id = "webhook_probe"
internal = true
target = "plugin:flaky"

[plans.tiny]
per_user = { rate = "1/h", burst = 1 }
"#;

/// chromedriver with a headless Chromium behind it; both go when this is dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn require(cmd: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{cmd}` is not installed: the console test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn browser(data_dir: &Path) -> Browser {
    let chromium = require("chromium");
    let chromedriver = require("chromedriver");
    let port = free_port();
    let driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("chromedriver.log")).unwrap())
        .spawn()
        .expect("starting chromedriver");
    let mut b = Browser { driver, client: None };
    let profile = tempdir("chromium");
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    }))
    .unwrap();
    // chromedriver takes a moment to listen: retry the session until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) => {
                if let Some(status) = b.driver.try_wait().unwrap() {
                    panic!("chromedriver exited ({status}): {e}");
                }
                assert!(Instant::now() < deadline, "no WebDriver session from chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    b.client = Some(client);
    b
}

fn shots_dir(gw: &Gateway) -> PathBuf {
    if std::env::var_os("UPDATE_CONSOLE_SCREENSHOTS").is_some() {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        gw.data_dir.join("screenshots")
    }
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`, waiting up to 10 s for it. An element found
/// on the page a click is leaving goes stale before its text is read: look again on the new
/// page rather than fail.
async fn text(c: &Client, css: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let e = c.wait().at_most(left).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.text().await {
            Ok(t) => return t,
            Err(e) if e.is_stale_element_reference() && std::time::Instant::now() < deadline => {}
            Err(e) => panic!("{css}: {e}"),
        }
    }
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

/// The status of a webhook event, as the API tells its org's admin.
async fn event_status(gw: &Gateway, token: &str, event: &str) -> String {
    let r = gw.req("GET", &format!("/v1/webhook-events/{event}")).token(token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["status"].as_str().unwrap_or("").to_string()
}

async fn wait_event(gw: &Gateway, token: &str, event: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while event_status(gw, token, event).await != status {
        assert!(Instant::now() < deadline, "event {event} never became {status}: {}", gw.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn upload(gw: &Gateway, name: &str, file: &str) {
    let r = gw
        .req("PUT", &format!("/v1/admin/plugins/{name}?activate=true"))
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(std::fs::read(plugin_dir().join(file)).unwrap())
        .send()
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn echo_version(gw: &Gateway, token: &str) -> String {
    let r = gw.req("POST", "/v1/echo").token(token).json(&json!({})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    registry_number(r.header("x-plugin-version").unwrap())
}

/// The registry number of a served version: `0.1.0+r2` (a version whose component carries a
/// manifest, as echo's does) and `2` (one without) are both version 2; a policy file's
/// version (`0.1.0`) stays as it is.
fn registry_number(served: &str) -> String {
    served.rsplit_once("+r").map_or(served, |(_, n)| n).to_string()
}

#[tokio::test]
async fn console_in_a_real_browser() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("console-test.toml", POLICIES);
    let gw = Gateway::start_with(opts).await;
    let base = format!("http://{}", gw.addr);

    // Through the API, as an operator's users would: two orgs, a dead letter, two versions.
    let acme = gw.create_org("Acme", Some("unmetered")).await;
    let (acme_admin, _, _) = gw.create_token(&acme, "admin", "admin@acme.test").await;
    let tiny = gw.create_org("Tiny <b>& Co</b>", Some("tiny")).await;
    let (tiny_member, _, tiny_token_id) = gw.create_token(&tiny, "member", "m@tiny.test").await;
    let r = gw.req("POST", "/v1/webhook-endpoints").token(&acme_admin).json(&json!({"provider": "probe", "scheme": "standard-webhooks"})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let endpoint = r.json["endpoint_id"].as_str().unwrap().to_string();
    let key = crate::webhooks::whsec_key(r.json["secret"].as_str().unwrap());
    let (body, ts) = (br#"{"then":"error"}"#, chrono::Utc::now().timestamp());
    let r = gw
        .req("POST", &format!("/v1/webhooks/{endpoint}"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_dead")
        .header("webhook-timestamp", &ts.to_string())
        .header("webhook-signature", &sign_standard(&key, "msg_dead", ts, body))
        .body(body.to_vec())
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dead = r.json["event_id"].as_str().unwrap().to_string();
    wait_event(&gw, &acme_admin, &dead, "dead").await;
    upload(&gw, "echo", "echo.wasm").await;
    upload(&gw, "echo", "contract_probe.wasm").await;
    let (acme_member, _, _) = gw.create_token(&acme, "member", "m@acme.test").await;
    assert_eq!(echo_version(&gw, &acme_member).await, "2");

    // Without a session every page sends the browser to sign in; the headers are strict.
    let r = gw.req("GET", "/console/orgs").send().await;
    assert_eq!((r.status, r.header("location")), (303, Some("/console/sign-in")), "{}", r.text);
    let r = gw.req("GET", "/console/sign-in").send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let csp = r.header("content-security-policy").unwrap();
    for d in ["default-src 'none'", "style-src 'self'", "form-action 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(d), "{csp}");
    }
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    // A bearer token is no console credential.
    let r = gw.req("GET", "/console/orgs").token(&gw.super_token).send().await;
    assert_eq!(r.status, 303);

    let b = browser(&gw.data_dir).await;
    let c = b.client.as_ref().unwrap();
    let shots = shots_dir(&gw);
    c.goto(&format!("{base}/console/plugins")).await.unwrap();
    assert_eq!(path_of(c).await, "/console/sign-in");
    shot(c, &shots, "sign-in").await;

    // A token that is not a super-admin's does not sign in.
    c.find(Locator::Id("token")).await.unwrap().send_keys(&acme_admin).await.unwrap();
    c.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
    assert!(text(c, ".error").await.contains("not a live super-admin token"));
    assert_eq!(path_of(c).await, "/console/sign-in");

    c.find(Locator::Id("token")).await.unwrap().send_keys(&gw.super_token).await.unwrap();
    c.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("tr[data-org]")).await.unwrap();
    assert_eq!(path_of(c).await, "/console/orgs");

    // The cookie: HttpOnly, SameSite=Strict, Path=/console, not Secure over http, and not the token.
    let cookie = c.get_named_cookie("gateway_console").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_eq!(cookie.path(), Some("/console"));
    assert_ne!(cookie.secure(), Some(true));
    assert_eq!(cookie.value().len(), 64);
    assert!(!cookie.value().contains(&gw.super_token));
    assert!(!gw.stdout().contains(&gw.super_token) && !gw.stderr().contains(&gw.super_token), "the token was logged");

    // Orgs with their plans; names are escaped, not markup. The dead letter's failed attempts
    // show as Acme's plugin failures.
    let acme_row = format!("tr[data-org='{acme}']");
    let tiny_row = format!("tr[data-org='{tiny}']");
    assert!(text(c, &acme_row).await.contains("unmetered"));
    assert!(text(c, &tiny_row).await.starts_with("Tiny <b>& Co</b> tiny"), "{}", text(c, &tiny_row).await);
    assert_eq!(text(c, &format!("{acme_row} td.failures")).await, "2");
    assert_eq!(text(c, &format!("{tiny_row} td.limited")).await, "0");
    shot(c, &shots, "orgs").await;

    // Traffic: Tiny's member calls echo, then goes over the plan's quota once; the console
    // counts both requests, one of them an error.
    let count = |cell: &'static str| {
        let sel = format!("{tiny_row} td.{cell}");
        async move { text(c, &sel).await.parse::<u64>().expect("a count") }
    };
    let (requests, errors) = (count("requests").await, count("errors").await);
    assert_eq!(echo_version(&gw, &tiny_member).await, "2");
    let r = gw.req("POST", "/v1/echo").token(&tiny_member).json(&json!({})).send().await;
    assert_eq!(r.status, 429, "{}", r.text);
    c.refresh().await.unwrap();
    assert_eq!(text(c, &format!("{tiny_row} td.limited")).await, "1");
    assert_eq!(count("requests").await, requests + 2);
    assert_eq!(count("errors").await, errors + 1);

    // Roll the plugin back, through the confirmation step.
    c.find(Locator::LinkText("Plugins")).await.unwrap().click().await.unwrap();
    let echo = "section[data-plugin=echo]";
    assert!(text(c, echo).await.contains("2"));
    shot(c, &shots, "plugins").await;
    c.find(Locator::Css(&format!("{echo} a.button"))).await.unwrap().click().await.unwrap();
    assert!(path_of(c).await.ends_with("/console/plugins/echo/confirm"));
    shot(c, &shots, "plugin-confirm").await;
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    assert!(text(c, ".notice").await.contains("echo: version 1 is active (was 2)"));
    assert_eq!(echo_version(&gw, &acme_member).await, "1");

    // Replay the dead letter, once its adapter is fixed.
    upload(&gw, "flaky", "echo.wasm").await;
    c.goto(&format!("{base}/console/orgs/{acme}")).await.unwrap();
    assert_eq!(text(c, "dd.dead").await, "1");
    shot(c, &shots, "org").await;
    c.find(Locator::Css("tr.dead form button")).await.unwrap().click().await.unwrap();
    assert!(text(c, ".notice").await.contains(&dead));
    wait_event(&gw, &acme_admin, &dead, "processed").await;

    c.find(Locator::LinkText("Job queue")).await.unwrap().click().await.unwrap();
    text(c, "dl").await;
    shot(c, &shots, "jobs").await;

    // The approval queue. Three proposed changes on one Acme campaign (stored as the
    // optimizer stores them); approving one moves the campaign to version 2, so approving
    // another computed on version 1 is refused as superseded, deterministically.
    let owner = db.owner_pool().await;
    let (campaign,): (String,) = sqlx::query_as(
        "INSERT INTO campaigns (tenant_id, name, channel, provider, status, sequence_version) \
         VALUES ($1::uuid, 'Spring <launch>', 'email', 'smartlead', 'active', 1) RETURNING id::text",
    )
    .bind(&acme)
    .fetch_one(&owner)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ($1::uuid, $2::uuid, 1, \
         '[{\"seq_number\": 1, \"subject\": \"Hello\", \"body\": \"Old body\", \"delay_days\": 1}]')",
    )
    .bind(&acme)
    .bind(&campaign)
    .execute(&owner)
    .await
    .unwrap();
    let long_body = format!("Dear friend, {}the end", "a much clearer body. ".repeat(15));
    let change = |kind: &'static str, field: &'static str, summary: &'static str, before: Value, after: Value| {
        let (owner, acme, campaign) = (owner.clone(), acme.clone(), campaign.clone());
        async move {
            let changes = json!([{ "asset_type": "sequence_step", "asset_id": "1", "field": field, "previous_value": before,
                                   "new_value": after, "auto_applied": false, "agent": "optimizer" }]);
            sqlx::query_scalar::<_, String>(
                "INSERT INTO campaign_optimizations (tenant_id, campaign_id, optimization_type, summary, rationale, changes, \
                                                     source, agent, base_version, dedupe_key) \
                 VALUES ($1::uuid, $2::uuid, $3, $4, 'Open rate is 4% over 200 sends.', $5, 'rules', 'optimizer', 1, $3) \
                 RETURNING id::text",
            )
            .bind(&acme)
            .bind(&campaign)
            .bind(kind)
            .bind(summary)
            .bind(changes)
            .fetch_one(&owner)
            .await
            .unwrap()
        }
    };
    let delay = change("update_delay", "delay_days", "Wait two days", json!(1), json!(2)).await;
    let body_change = change("update_body", "body", "Clearer body", json!("Old body"), json!(long_body)).await;
    let subject = change("update_subject", "subject", "Friendlier subject", json!("Hello"), json!("Hi <there> & welcome")).await;
    let super_admin = format!("super_admin:{}", {
        let digest = gateway::auth::digest(&gw.super_token);
        sqlx::query_scalar::<_, String>("SELECT id::text FROM api_tokens WHERE token_sha256 = $1").bind(&digest[..]).fetch_one(&owner).await.unwrap()
    });
    let review = |id: String| {
        let owner = owner.clone();
        async move {
            let (status, error, reviewed_by, result_version): (String, Option<String>, Option<String>, Option<i32>) = sqlx::query_as(
                "SELECT status, error, reviewed_by, result_version FROM campaign_optimizations WHERE id = $1::uuid",
            )
            .bind(&id)
            .fetch_one(&owner)
            .await
            .unwrap();
            let actors: Vec<(String, String)> = sqlx::query_as(
                "SELECT to_status, actor FROM optimization_transitions WHERE optimization_id = $1::uuid ORDER BY id",
            )
            .bind(&id)
            .fetch_all(&owner)
            .await
            .unwrap();
            (status, error, reviewed_by, result_version, actors)
        }
    };

    // The org page counts them and links to the queue filtered by the org.
    c.goto(&format!("{base}/console/orgs/{acme}")).await.unwrap();
    assert_eq!(text(c, "dd.pending").await, "3");
    c.find(Locator::Css("dd.pending a")).await.unwrap().click().await.unwrap();
    assert_eq!(path_of(c).await, "/console/approvals");
    assert!(text(c, "h1").await.contains("Acme"));
    // From the nav: every org, newest first, the values escaped, long text folded.
    c.find(Locator::LinkText("Approval queue")).await.unwrap().click().await.unwrap();
    let queue = format!("section[data-org='{acme}']");
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for e in c.find_all(Locator::Css(&format!("{queue} tr.change"))).await.unwrap() {
            v.push(e.attr("data-change").await.unwrap().unwrap());
        }
        v
    };
    assert_eq!(ids, [subject.clone(), body_change.clone(), delay.clone()], "newest first");
    let row = |id: &str| format!("tr[data-change='{id}']");
    let subject_row = text(c, &row(&subject)).await;
    assert!(subject_row.contains("Spring <launch>") && subject_row.contains("update_subject") && subject_row.contains("Friendlier subject"), "{subject_row}");
    assert!(subject_row.contains("Before: Hello") && subject_row.contains("→ After: Hi <there> & welcome"), "{subject_row}");
    assert!(subject_row.contains("Open rate is 4% over 200 sends.") && subject_row.contains("rules"), "{subject_row}");
    let full = c.find(Locator::Css(&format!("{} td.diff .after details pre", row(&body_change)))).await.unwrap();
    assert_eq!(full.prop("textContent").await.unwrap().as_deref(), Some(long_body.as_str()));
    assert!(text(c, &format!("{} td.diff .after", row(&body_change))).await.contains("…"));
    assert_eq!(text(c, &format!("table.recent tr[data-org='{acme}'] td.proposed")).await, "3");
    shot(c, &shots, "approvals").await;
    // On a phone the page does not scroll sideways: the table scrolls in its own box.
    c.set_window_size(390, 844).await.unwrap();
    c.refresh().await.unwrap();
    text(c, &queue).await;
    let wide = c.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(wide, json!(true), "the approval queue overflows 390 px");
    shot(c, &shots, "approvals-390").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Reject, through the confirmation, with a reason: recorded as this super-admin.
    c.find(Locator::Css(&format!("{} a.reject", row(&subject)))).await.unwrap().click().await.unwrap();
    assert!(path_of(c).await.ends_with(&format!("/approvals/{subject}/confirm")));
    assert_eq!(review(subject.clone()).await.0, "proposed", "the confirmation page changed nothing");
    c.find(Locator::Id("reason")).await.unwrap().send_keys("Too playful for this audience").await.unwrap();
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    assert!(text(c, ".notice.review").await.contains("“Friendlier subject” is rejected."));
    let (status, error, reviewed_by, _, actors) = review(subject.clone()).await;
    assert_eq!((status.as_str(), error.as_deref(), reviewed_by.as_deref()), ("rejected", Some("Too playful for this audience"), Some(super_admin.as_str())));
    assert_eq!(actors.last().unwrap(), &("rejected".to_string(), super_admin.clone()));

    // Approve: the tenant route's path (a new sequence version and its provider sync job).
    c.find(Locator::Css(&format!("{} a.approve", row(&body_change)))).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    text(c, ".notice.review").await;
    let (status, _, reviewed_by, result_version, actors) = review(body_change.clone()).await;
    // The sync job may already have settled it (no smartlead account here: `failed`).
    assert!(["applying", "applied", "failed"].contains(&status.as_str()), "{status}");
    assert_eq!((reviewed_by.as_deref(), result_version), (Some(super_admin.as_str()), Some(2)));
    assert!(actors.contains(&("approved".to_string(), super_admin.clone())) && actors.contains(&("applying".to_string(), super_admin.clone())), "{actors:?}");

    // The last one was computed on version 1: a notice that it is superseded, not an error page.
    c.find(Locator::Css(&format!("{} a.approve", row(&delay)))).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("main form button[type=submit]")).await.unwrap().click().await.unwrap();
    let notice = text(c, ".notice.review").await;
    assert!(notice.starts_with("Not done:") && notice.contains("is superseded") && notice.contains("version 2"), "{notice}");
    assert_eq!(path_of(c).await, "/console/approvals");
    let (status, _, _, _, actors) = review(delay.clone()).await;
    assert_eq!(status, "superseded");
    assert_eq!(actors.last().unwrap(), &("superseded".to_string(), super_admin.clone()));
    assert!(c.find(Locator::Css(&queue)).await.is_err(), "the queue still lists Acme");
    // A change no longer proposed has nothing left to confirm.
    c.goto(&format!("{base}/console/orgs/{acme}/approvals/{subject}/confirm?action=approve")).await.unwrap();
    assert!(text(c, "main .notice").await.contains("nothing to review"));
    assert!(c.find(Locator::Css("main form")).await.is_err());

    // A form with a wrong CSRF token is refused, and nothing happens.
    c.goto(&format!("{base}/console/orgs/{tiny}")).await.unwrap();
    c.execute("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')", vec![]).await.unwrap();
    c.find(Locator::Css("td form button")).await.unwrap().click().await.unwrap();
    assert!(text(c, "main").await.contains("CSRF"));
    let pool = db.owner_pool().await;
    let live = || async {
        sqlx::query_scalar::<_, bool>("SELECT revoked_at IS NULL FROM api_tokens WHERE id = $1::uuid")
            .bind(&tiny_token_id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(live().await, "a forged form revoked the token");
    // With the right one, the token is revoked.
    c.goto(&format!("{base}/console/orgs/{tiny}")).await.unwrap();
    c.find(Locator::Css(&format!("button[aria-label='Revoke token {tiny_token_id}']"))).await.unwrap().click().await.unwrap();
    assert!(text(c, "main").await.contains("revoked"));
    assert!(!live().await);
    let r = gw.req("GET", "/v1/whoami").token(&tiny_member).send().await;
    assert_eq!(r.status, 401, "{}", r.text);

    // Readable on a phone.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/console/orgs")).await.unwrap();
    text(c, &acme_row).await;
    shot(c, &shots, "orgs-390").await;

    // Signing out ends the session.
    c.find(Locator::Css("nav button")).await.unwrap().click().await.unwrap();
    assert_eq!(path_of(c).await, "/console/sign-in");
    c.goto(&format!("{base}/console/orgs")).await.unwrap();
    assert_eq!(path_of(c).await, "/console/sign-in");
    b.client.clone().unwrap().close().await.unwrap();
}
