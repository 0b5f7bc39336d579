//! crm-track through the real gateway and PostgreSQL: seed 001's checklist, harder.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{assert_error, Gateway, Resp, TestDb};

struct Crm {
    db: TestDb,
    pool: PgPool,
    gw: Gateway,
    org: String,
    token: String,
    user: String,
}

impl Crm {
    async fn start(plan: &str) -> Crm {
        let db = TestDb::new().await;
        let gw = Gateway::start(&db).await;
        let pool = db.owner_pool().await;
        let org = gw.create_org("Acme", Some(plan)).await;
        let (token, user, _) = gw.create_token(&org, "admin", "admin@acme.test").await;
        Crm { db, pool, gw, org, token, user }
    }

    async fn track(&self, token: &str, body: Value, key: Option<&str>) -> Resp {
        let mut r = self.gw.req("POST", "/v1/crm/track").token(token).json(&body);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.send().await
    }

    async fn n(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

fn signup(email: &str) -> Value {
    json!({"type": "signup", "props": {"plan": "pro"}, "contact": {"email": email, "name": "Ada"}})
}

#[tokio::test]
async fn track_records_contact_identities_event_and_outbox_in_one_go() {
    let c = Crm::start("unmetered").await;
    let r = c.track(&c.token, signup("  Ada@Example.COM "), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.header("x-plugin-version"), Some("0.1.0"));
    let contact = r.json["contact_id"].as_str().unwrap().to_string();
    assert!(r.json["event_id"].is_string());
    assert_eq!(c.n("SELECT count(*) FROM crm_contacts").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM contact_identities WHERE type = 'email' AND value = 'ada@example.com'").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox WHERE topic = 'event.tracked.v1'").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox WHERE topic = 'contact.updated.v1'").await, 1);
    let tenant: String = sqlx::query_scalar("SELECT tenant_id::text FROM crm_events").fetch_one(&c.pool).await.unwrap();
    assert_eq!(tenant, c.org);

    // The same person again: same contact, no contact update.
    let r = c.track(&c.token, json!({"type": "login", "contact": {"email": "ada@example.com"}}), None).await;
    assert_eq!(r.json["contact_id"], contact.as_str());
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox WHERE topic = 'contact.updated.v1'").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_events").await, 2);

    // Reading it back.
    let r = c.gw.req("GET", &format!("/v1/crm/contacts/{contact}")).token(&c.token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["name"], "Ada");
    assert_eq!(r.json["identities"][0]["value"], "ada@example.com");
    assert_eq!(r.json["events"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["events"][0]["type"], "login");
    let _ = (&c.db, &c.user);
}

#[tokio::test]
async fn fifty_parallel_requests_same_email_distinct_keys_make_one_contact_and_fifty_events() {
    let c = Crm::start("unmetered").await;
    let c = &c;
    let rs = futures::future::join_all((0..50).map(|i| async move {
        c.track(&c.token, signup("race@example.com"), Some(&format!("k-{i}"))).await
    }))
    .await;
    for r in &rs {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let contacts: std::collections::HashSet<_> = rs.iter().map(|r| r.json["contact_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(contacts.len(), 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_contacts").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_events").await, 50);
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox WHERE topic = 'event.tracked.v1'").await, 50);
    monitoring_queries_are_clean(&c.pool).await;
}

#[tokio::test]
async fn fifty_parallel_requests_with_the_same_key_store_one_event() {
    let c = Crm::start("unmetered").await;
    let c = &c;
    let rs = futures::future::join_all((0..50).map(|_| async move {
        c.track(&c.token, signup("same-key@example.com"), Some("one-key")).await
    }))
    .await;
    let mut firsts = 0;
    let mut event_ids = std::collections::HashSet::new();
    for r in &rs {
        match r.status {
            200 => {
                if r.json["idempotent"] != true {
                    firsts += 1;
                }
                event_ids.insert(r.json["event_id"].as_str().unwrap().to_string());
            }
            409 => assert_error(r, 409, "IDEMPOTENCY_IN_FLIGHT"),
            s => panic!("unexpected {s}: {}", r.text),
        }
    }
    assert_eq!(firsts, 1);
    assert_eq!(event_ids.len(), 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_events").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox WHERE topic = 'event.tracked.v1'").await, 1);
    monitoring_queries_are_clean(&c.pool).await;
}

#[tokio::test]
async fn idempotent_repeats_write_nothing_and_a_reused_key_is_422() {
    let c = Crm::start("unmetered").await;
    let first = c.track(&c.token, signup("idem@example.com"), Some("abc123")).await;
    assert_eq!(first.status, 200);
    let again = c.track(&c.token, signup("idem@example.com"), Some("abc123")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["idempotent"], true);
    assert_eq!(again.json["event_id"], first.json["event_id"]);
    assert_eq!(c.n("SELECT count(*) FROM crm_events").await, 1);
    assert_eq!(c.n("SELECT count(*) FROM crm_outbox").await, 2);
    let other = c.track(&c.token, signup("someone-else@example.com"), Some("abc123")).await;
    assert_error(&other, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(c.n("SELECT count(*) FROM crm_contacts").await, 1);
    // The key may also come in props.idemKey (seed 001).
    let body = json!({"type": "signup", "props": {"idemKey": "in-props"}, "contact": {"email": "p@example.com"}});
    let a = c.track(&c.token, body.clone(), None).await;
    let b = c.track(&c.token, body, None).await;
    assert_eq!(b.json["idempotent"], true);
    assert_eq!(a.json["event_id"], b.json["event_id"]);
    // The lookup is served by the partial index on props->>'idemKey'.
    let mut tx = c.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT id FROM crm_events WHERE tenant_id = '{}' AND (props ->> 'idemKey') = 'x'",
        c.org
    ))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(plan.iter().any(|l| l.contains("crm_events_idem_key")), "{plan:?}");
}

#[tokio::test]
async fn identities_resolve_in_priority_order_and_conflicts_are_recorded_not_merged() {
    let c = Crm::start("unmetered").await;
    let all = c
        .track(&c.token, json!({"type": "t", "contact": {"external_id": "acct_42", "email": "alice@example.com", "phone": "+15551234567"}}), None)
        .await;
    assert_eq!(all.status, 200, "{}", all.text);
    let alice = all.json["contact_id"].as_str().unwrap().to_string();
    let ids: i64 = c.n(&format!("SELECT count(*) FROM contact_identities WHERE contact_id = '{alice}'")).await;
    assert_eq!(ids, 3);
    for contact in [json!({"phone": "+1 555-123-4567"}), json!({"external_id": "acct_42"}), json!({"email": "ALICE@example.com"})] {
        let r = c.track(&c.token, json!({"type": "t", "contact": contact}), None).await;
        assert_eq!(r.json["contact_id"], alice.as_str(), "{}", r.text);
    }
    // Bob owns another email; an event naming Bob's email and Alice's phone goes to Bob (email
    // outranks phone), keeps Alice intact, and records the disagreement.
    let bob = c.track(&c.token, json!({"type": "t", "contact": {"email": "bob@example.com"}}), None).await;
    let bob = bob.json["contact_id"].as_str().unwrap().to_string();
    let r = c.track(&c.token, json!({"type": "mixed", "contact": {"email": "bob@example.com", "phone": "+15551234567"}}), None).await;
    assert_eq!(r.json["contact_id"], bob.as_str());
    let conflicts: Value = sqlx::query_scalar("SELECT conflicts FROM crm_events WHERE type = 'mixed'").fetch_one(&c.pool).await.unwrap();
    assert_eq!(conflicts, json!([{"type": "phone", "contact_id": alice}]));
    assert_eq!(c.n("SELECT count(*) FROM crm_contacts").await, 2);
    let phone_owner: String = sqlx::query_scalar("SELECT contact_id::text FROM contact_identities WHERE type = 'phone'").fetch_one(&c.pool).await.unwrap();
    assert_eq!(phone_owner, alice);
    // external_id outranks email.
    let r = c.track(&c.token, json!({"type": "t", "contact": {"external_id": "acct_42", "email": "bob@example.com"}}), None).await;
    assert_eq!(r.json["contact_id"], alice.as_str());
}

#[tokio::test]
async fn tenants_cannot_see_or_touch_each_others_contacts() {
    let c = Crm::start("unmetered").await;
    let a = c.track(&c.token, signup("shared@example.com"), None).await;
    let a_contact = a.json["contact_id"].as_str().unwrap().to_string();
    let org_b = c.gw.create_org("B", Some("unmetered")).await;
    let (tb, _, _) = c.gw.create_token(&org_b, "member", "m@b.test").await;
    let foreign = c.gw.req("GET", &format!("/v1/crm/contacts/{a_contact}")).token(&tb).send().await;
    let missing = c.gw.req("GET", &format!("/v1/crm/contacts/{}", uuid::Uuid::new_v4())).token(&tb).send().await;
    assert_error(&foreign, 404, "NOT_FOUND");
    assert_error(&missing, 404, "NOT_FOUND");
    assert_error(&c.gw.req("GET", "/v1/crm/contacts/not-a-uuid").token(&tb).send().await, 404, "NOT_FOUND");
    let r = c.gw.req("GET", &format!("/v1/crm/events?contact_id={a_contact}")).token(&tb).send().await;
    assert_eq!(r.json["events"], json!([]));
    // B's identical email is B's own contact.
    let b = c.track(&tb, signup("shared@example.com"), None).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_ne!(b.json["contact_id"], a.json["contact_id"]);
    assert_eq!(c.n("SELECT count(*) FROM crm_contacts").await, 2);
    // And B cannot push its events onto A's contact by naming A's org.
    let r = c.track(&tb, json!({"type": "x", "org_id": c.org, "contact": {"email": "x@y.test"}}), None).await;
    assert_error(&r, 403, "TENANT_MISMATCH");
    monitoring_queries_are_clean(&c.pool).await;
}

#[tokio::test]
async fn every_validation_rule_is_a_400_with_details_and_writes_nothing() {
    let c = Crm::start("unmetered").await;
    let cases = [
        (json!({"props": {}, "contact": {"email": "a@b.co"}}), "type"),
        (json!({"type": "", "contact": {"email": "a@b.co"}}), "type"),
        (json!({"type": 7, "contact": {"email": "a@b.co"}}), "type"),
        (json!({"type": "x".repeat(101), "contact": {"email": "a@b.co"}}), "type"),
        (json!({"type": "t", "props": [1, 2], "contact": {"email": "a@b.co"}}), "props"),
        (json!({"type": "t", "props": "str", "contact": {"email": "a@b.co"}}), "props"),
        (json!({"type": "t"}), "contact"),
        (json!({"type": "t", "contact": {}}), "contact"),
        (json!({"type": "t", "contact": {"name": "only a name"}}), "contact"),
        (json!({"type": "t", "contact": {"email": "not-an-email"}}), "contact.email"),
        (json!({"type": "t", "contact": {"email": "a@b"}}), "contact.email"),
        (json!({"type": "t", "contact": {"phone": "12345"}}), "contact.phone"),
        (json!({"type": "t", "contact": {"phone": "+0123456789"}}), "contact.phone"),
        (json!({"type": "t", "contact": {"phone": "+1555abc4567"}}), "contact.phone"),
        (json!({"type": "t", "contact": {"external_id": ""}}), "contact.external_id"),
        (json!({"type": "t", "props": {"big": "x".repeat(33 * 1024)}, "contact": {"email": "a@b.co"}}), "props"),
        (json!({"type": "t", "props": {"idemKey": 5}, "contact": {"email": "a@b.co"}}), "props.idemKey"),
        (json!([1]), "body"),
    ];
    for (body, field) in cases {
        let r = c.track(&c.token, body.clone(), None).await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        let fields: Vec<&str> = r.json["details"].as_array().unwrap().iter().filter_map(|d| d["field"].as_str()).collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
    }
    // Several problems are reported together.
    let r = c.track(&c.token, json!({"type": "", "props": 1, "contact": {"email": "x"}}), None).await;
    assert_eq!(r.json["details"].as_array().unwrap().len(), 3, "{}", r.text);
    assert_error(&c.gw.req("POST", "/v1/crm/track").token(&c.token).body("{").send().await, 400, "INVALID_JSON");
    let big = format!("{{\"type\":\"t\",\"contact\":{{\"email\":\"a@b.co\"}},\"props\":{{\"x\":\"{}\"}}}}", "y".repeat(65 * 1024));
    assert_error(&c.gw.req("POST", "/v1/crm/track").token(&c.token).body(big).send().await, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(c.n("SELECT (SELECT count(*) FROM crm_contacts) + (SELECT count(*) FROM crm_events) + (SELECT count(*) FROM crm_outbox)").await, 0);
    let r = c.gw.req("GET", "/v1/crm/events?limit=0").token(&c.token).send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn business_id_must_be_one_the_caller_belongs_to() {
    let c = Crm::start("unmetered").await;
    let mine = c.gw.req("POST", "/v1/businesses").token(&c.token).json(&json!({"name": "Mine"})).send().await;
    let mine = mine.json["business_id"].as_str().unwrap().to_string();
    let org_b = c.gw.create_org("B", None).await;
    let (tb, _, _) = c.gw.create_token(&org_b, "admin", "a@b.test").await;
    let theirs = c.gw.req("POST", "/v1/businesses").token(&tb).json(&json!({"name": "Theirs"})).send().await;
    let theirs = theirs.json["business_id"].as_str().unwrap().to_string();
    let (member, _, _) = c.gw.create_token(&c.org, "member", "m@acme.test").await;
    for (token, body) in [
        (&c.token, json!({"type": "t", "business_id": theirs, "contact": {"email": "a@b.co"}})),
        (&c.token, json!({"type": "t", "props": {"business_id": theirs}, "contact": {"email": "a@b.co"}})),
        (&member, json!({"type": "t", "business_id": mine, "contact": {"email": "a@b.co"}})),
    ] {
        assert_error(&c.track(token, body, None).await, 403, "UNAUTHORIZED_BUSINESS");
    }
    assert_eq!(c.n("SELECT count(*) FROM crm_events").await, 0);
    let r = c.track(&c.token, json!({"type": "t", "business_id": mine, "contact": {"email": "a@b.co"}}), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stored: String = sqlx::query_scalar("SELECT business_id::text FROM crm_events").fetch_one(&c.pool).await.unwrap();
    assert_eq!(stored, mine);
    assert!(c.gw.stderr().contains("crm_track_unauthorized_business"));
}

#[tokio::test]
async fn a_failure_after_the_first_inserts_leaves_nothing_behind() {
    let c = Crm::start("unmetered").await;
    // Make the last statement of the invocation (the outbox insert) fail in the database,
    // after the contact, identities and event were written in the same transaction. (A plain
    // error: a constraint violation would be the request's data, a 400.)
    sqlx::raw_sql(
        "CREATE FUNCTION fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.payload->>'type' = 'boom' THEN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END IF;
             RETURN NEW; END $$;
         CREATE TRIGGER fail_outbox BEFORE INSERT ON crm_outbox FOR EACH ROW EXECUTE FUNCTION fail_outbox();",
    )
    .execute(&c.pool)
    .await
    .unwrap();
    let r = c.track(&c.token, json!({"type": "boom", "contact": {"email": "boom@example.com", "phone": "+15550001111"}}), Some("boom-1")).await;
    assert_error(&r, 502, "PLUGIN_FAILED");
    assert_eq!(c.n("SELECT (SELECT count(*) FROM crm_contacts) + (SELECT count(*) FROM contact_identities) + (SELECT count(*) FROM crm_events) + (SELECT count(*) FROM crm_outbox)").await, 0);
    // The key was not consumed: a retry after the fault is fixed succeeds.
    sqlx::query("DROP TRIGGER fail_outbox ON crm_outbox").execute(&c.pool).await.unwrap();
    let r = c.track(&c.token, json!({"type": "boom", "contact": {"email": "boom@example.com", "phone": "+15550001111"}}), Some("boom-1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("idempotent").is_none());
}

#[tokio::test]
async fn events_are_listed_newest_first_with_filters_and_paging() {
    let c = Crm::start("unmetered").await;
    let mut contact = String::new();
    for t in ["a", "b", "c"] {
        let r = c.track(&c.token, json!({"type": t, "contact": {"email": "list@example.com"}}), None).await;
        contact = r.json["contact_id"].as_str().unwrap().to_string();
    }
    c.track(&c.token, json!({"type": "a", "contact": {"email": "other@example.com"}}), None).await;
    let r = c.gw.req("GET", &format!("/v1/crm/events?contact_id={contact}&limit=2")).token(&c.token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let types: Vec<&str> = r.json["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["c", "b"]);
    let before = r.json["next_before"].as_str().unwrap().to_string();
    let r = c.gw.req("GET", &format!("/v1/crm/events?contact_id={contact}&limit=2&before={before}")).token(&c.token).send().await;
    let types: Vec<&str> = r.json["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["a"]);
    assert_eq!(r.json["next_before"], Value::Null);
    let r = c.gw.req("GET", "/v1/crm/events?type=a").token(&c.token).send().await;
    assert_eq!(r.json["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn per_user_rate_limit_is_twenty_per_second_on_the_standard_plan() {
    let c = Crm::start("standard").await;
    // All at once, so the answer does not depend on how fast this machine serves them.
    let c = &c;
    let answers = futures::future::join_all((0..40).map(|i| async move {
        c.track(&c.token, json!({"type": "t", "contact": {"email": format!("u{i}@example.com")}}), None).await
    }))
    .await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + limited.len(), 40, "only 200 or 429: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    // A burst of 20, plus what refilled (20/s) while the 40 were in flight.
    assert!((20..40).contains(&ok), "{ok} admitted");
    let r = limited.first().expect("never limited");
    assert_error(r, 429, "RATE_LIMITED");
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=20;w=1"));
}

#[tokio::test]
async fn logs_carry_event_tracked_without_emails_or_phones() {
    let c = Crm::start("unmetered").await;
    let r = c.track(&c.token, json!({"type": "t", "contact": {"email": "private.person@example.com", "phone": "+15559876543"}}), None).await;
    assert_eq!(r.status, 200);
    let mut gw = c.gw;
    gw.terminate().await;
    let log = gw.stderr();
    assert!(log.contains("event_tracked"), "{log}");
    for secret in ["private.person", "example.com", "5559876543"] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
}

/// Seed 000's monitoring queries: both must return 0.
async fn monitoring_queries_are_clean(pool: &PgPool) {
    let dup: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT tenant_id, props->>'idemKey' FROM crm_events WHERE props ? 'idemKey' \
         GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(dup, 0, "duplicate idempotency keys");
    let cross: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM crm_events e JOIN crm_contacts c ON c.id = e.contact_id AND c.tenant_id <> e.tenant_id) \
              + (SELECT count(*) FROM contact_identities i JOIN crm_contacts c ON c.id = i.contact_id AND c.tenant_id <> i.tenant_id) \
              + (SELECT count(*) FROM crm_contacts c JOIN businesses b ON b.id = c.business_id AND b.tenant_id <> c.tenant_id)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(cross, 0, "cross-tenant rows");
}
