//! The HTTP error contract of "Gateway core": one test per error code, plus the native routes.

use serde_json::json;

use crate::harness::{assert_error, Gateway, TestDb};

async fn gateway() -> (TestDb, Gateway) {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    (db, gw)
}

#[tokio::test]
async fn unauthenticated_for_missing_unknown_malformed_and_revoked_tokens() {
    let (_db, gw) = gateway().await;
    let r = gw.req("GET", "/v1/whoami").send().await;
    assert_error(&r, 401, "UNAUTHENTICATED");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_error(&gw.req("GET", "/v1/whoami").token("gw_nope").send().await, 401, "UNAUTHENTICATED");
    let r = gw.req("GET", "/v1/whoami").header("authorization", "Basic abc").send().await;
    assert_error(&r, 401, "UNAUTHENTICATED");

    let org = gw.create_org("Acme", None).await;
    let (token, _, token_id) = gw.create_token(&org, "member", "m@acme.test").await;
    assert_eq!(gw.req("GET", "/v1/whoami").token(&token).send().await.status, 200);
    let r = gw.req("DELETE", &format!("/v1/admin/tokens/{token_id}")).token(&gw.super_token).send().await;
    assert_eq!(r.status, 204, "{}", r.text);
    // Revocation is immediate, despite the credential cache.
    assert_error(&gw.req("GET", "/v1/whoami").token(&token).send().await, 401, "UNAUTHENTICATED");
    let r = gw.req("DELETE", &format!("/v1/admin/tokens/{token_id}")).token(&gw.super_token).send().await;
    assert_error(&r, 404, "NOT_FOUND");
}

#[tokio::test]
async fn whoami_reports_the_org_from_the_token() {
    let (_db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (token, user, _) = gw.create_token(&org, "admin", "  Boss@Acme.TEST ").await;
    let r = gw.req("GET", "/v1/whoami").token(&token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"org_id": org, "user_id": user, "role": "admin"}));
    // The same email again updates the role of the same user.
    let (token2, user2, _) = gw.create_token(&org, "member", "boss@acme.test").await;
    assert_eq!(user2, user);
    let r = gw.req("GET", "/v1/whoami").token(&token2).send().await;
    assert_eq!(r.json["role"], "member");
}

#[tokio::test]
async fn super_admin_on_a_tenant_route_needs_x_org_id() {
    let (_db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let r = gw.req("GET", "/v1/whoami").token(&gw.super_token).send().await;
    assert_error(&r, 400, "MISSING_TENANT_ID");
    let r = gw.req("GET", "/v1/whoami").token(&gw.super_token).header("x-org-id", &org).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"org_id": org, "user_id": null, "role": "super_admin"}));
    let r = gw
        .req("GET", "/v1/whoami")
        .token(&gw.super_token)
        .header("x-org-id", &uuid::Uuid::new_v4().to_string())
        .send()
        .await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = gw.req("GET", "/v1/whoami").token(&gw.super_token).header("x-org-id", "acme").send().await;
    assert_error(&r, 400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn tenant_mismatch_when_the_body_names_another_org() {
    let (db, gw) = gateway().await;
    let a = gw.create_org("A", None).await;
    let b = gw.create_org("B", None).await;
    let (ta, _, _) = gw.create_token(&a, "admin", "a@a.test").await;
    for field in ["org_id", "tenant_id"] {
        let r = gw
            .req("POST", "/v1/businesses")
            .token(&ta)
            .json(&json!({ "name": "Shop", field: b }))
            .send()
            .await;
        assert_error(&r, 403, "TENANT_MISMATCH");
        let r = gw
            .req("POST", "/v1/businesses")
            .token(&ta)
            .json(&json!({ "name": "Shop", field: 42 }))
            .send()
            .await;
        assert_error(&r, 403, "TENANT_MISMATCH");
    }
    // Nothing was written by the refused requests.
    let pool = db.owner_pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM businesses").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
    // Naming one's own org is fine.
    let r = gw.req("POST", "/v1/businesses").token(&ta).json(&json!({ "name": "Shop", "org_id": a })).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn unauthorized_business_unless_owner_or_team_member() {
    let (_db, gw) = gateway().await;
    let a = gw.create_org("A", None).await;
    let b = gw.create_org("B", None).await;
    let (admin_a, _, _) = gw.create_token(&a, "admin", "admin@a.test").await;
    let (member_a, member_a_id, _) = gw.create_token(&a, "member", "m@a.test").await;
    let (admin_b, _, _) = gw.create_token(&b, "admin", "admin@b.test").await;
    let mk = |t: String| {
        let gw = &gw;
        async move {
            let r = gw.req("POST", "/v1/businesses").token(&t).json(&json!({"name": "Biz"})).send().await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.json["business_id"].as_str().unwrap().to_string()
        }
    };
    let biz_a = mk(admin_a.clone()).await;
    let biz_b = mk(admin_b.clone()).await;
    let members = format!("/v1/businesses/{biz_a}/members");
    // Another org's business: refused.
    let r = gw.req("POST", &members).token(&member_a).json(&json!({"business_id": biz_b, "user_id": member_a_id})).send().await;
    assert_error(&r, 403, "UNAUTHORIZED_BUSINESS");
    // Own org's business, but neither owner nor member: refused, also inside props.
    let r = gw.req("POST", &members).token(&member_a).json(&json!({"user_id": member_a_id, "props": {"business_id": biz_a}})).send().await;
    assert_error(&r, 403, "UNAUTHORIZED_BUSINESS");
    let r = gw.req("POST", &members).token(&member_a).json(&json!({"user_id": member_a_id, "business_id": "not-a-uuid"})).send().await;
    assert_error(&r, 403, "UNAUTHORIZED_BUSINESS");
    // The owner adds the member to the team; then the member may name the business.
    let r = gw.req("POST", &members).token(&admin_a).json(&json!({"user_id": member_a_id, "business_id": biz_a})).send().await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw.req("POST", &members).token(&admin_a).json(&json!({"user_id": member_a_id})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["added"], false);
    let r = gw.req("GET", "/v1/whoami").token(&member_a).send().await;
    assert_eq!(r.status, 200);
    let r = gw.req("POST", &members).token(&member_a).json(&json!({"business_id": biz_a, "user_id": member_a_id})).send().await;
    // Past the business guard; members who do not own the business still may not add people.
    assert_error(&r, 403, "FORBIDDEN");
}

#[tokio::test]
async fn forbidden_for_roles_the_route_does_not_allow() {
    let (_db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (member, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    let r = gw.req("POST", "/v1/businesses").token(&member).json(&json!({"name": "x"})).send().await;
    assert_error(&r, 403, "FORBIDDEN");
    for t in [&member, &admin] {
        let r = gw.req("POST", "/v1/admin/orgs").token(t).json(&json!({"name": "x"})).send().await;
        assert_error(&r, 403, "FORBIDDEN");
        let r = gw.req("POST", &format!("/v1/admin/orgs/{org}/tokens")).token(t).json(&json!({"role": "admin", "email": "x@y.z"})).send().await;
        assert_error(&r, 403, "FORBIDDEN");
    }
    // Tenant token management does not exist (seed 002), whoever asks.
    for path in ["/v1/auth/tokens", "/v1/auth/tokens/abc"] {
        assert_error(&gw.req("POST", path).token(&admin).send().await, 403, "FORBIDDEN");
        assert_error(&gw.req("GET", path).send().await, 403, "FORBIDDEN");
    }
}

#[tokio::test]
async fn another_tenants_resource_is_404_exactly_like_a_missing_one() {
    let (_db, gw) = gateway().await;
    let a = gw.create_org("A", None).await;
    let b = gw.create_org("B", None).await;
    let (admin_a, _, _) = gw.create_token(&a, "admin", "a@a.test").await;
    let (admin_b, user_b, _) = gw.create_token(&b, "admin", "b@b.test").await;
    let r = gw.req("POST", "/v1/businesses").token(&admin_a).json(&json!({"name": "A's"})).send().await;
    let biz_a = r.json["business_id"].as_str().unwrap().to_string();
    let foreign = gw
        .req("POST", &format!("/v1/businesses/{biz_a}/members"))
        .token(&admin_b)
        .json(&json!({"user_id": user_b}))
        .send()
        .await;
    let missing = gw
        .req("POST", &format!("/v1/businesses/{}/members", uuid::Uuid::new_v4()))
        .token(&admin_b)
        .json(&json!({"user_id": user_b}))
        .send()
        .await;
    assert_error(&foreign, 404, "NOT_FOUND");
    assert_error(&missing, 404, "NOT_FOUND");
    assert_eq!(foreign.json["error"], missing.json["error"]);
    // Unknown routes and wrong methods.
    assert_error(&gw.req("GET", "/v1/nothing-here").token(&admin_a).send().await, 404, "NOT_FOUND");
    assert_error(&gw.req("DELETE", "/v1/whoami").token(&admin_a).send().await, 405, "METHOD_NOT_ALLOWED");
    // PATCH of an unknown org.
    let r = gw
        .req("PATCH", &format!("/v1/admin/orgs/{}", uuid::Uuid::new_v4()))
        .token(&gw.super_token)
        .json(&json!({"plan": "standard"}))
        .send()
        .await;
    assert_error(&r, 404, "NOT_FOUND");
}

#[tokio::test]
async fn rate_limited_with_retry_after_and_ratelimit_headers() {
    let (_db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    // standard: 20/s per user, burst 20. Forty back-to-back requests must hit the limit.
    let mut limited = None;
    for _ in 0..40 {
        let r = gw.req("GET", "/v1/whoami").token(&t).send().await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("40 requests at once never hit a 20-burst limit");
    assert_error(&r, 429, "RATE_LIMITED");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(r.header("ratelimit-policy"), Some("\"user\";q=20;w=1"));
    assert!(r.header("ratelimit").unwrap().starts_with("\"user\";r=0;t="), "{:?}", r.headers);
}

#[tokio::test]
async fn payload_too_large_before_anything_is_written() {
    let (db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(17 * 1024));
    let r = gw.req("POST", "/v1/businesses").token(&admin).body(big).send().await;
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
    let pool = db.owner_pool().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM businesses").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn invalid_json_and_validation_failures_are_400_with_codes() {
    let (_db, gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    let r = gw.req("POST", "/v1/businesses").token(&admin).body("{\"name\": ").send().await;
    assert_error(&r, 400, "INVALID_JSON");
    for body in [json!({}), json!({"name": 5}), json!({"name": "  "}), json!([1]), json!({"name": "x".repeat(201)})] {
        let r = gw.req("POST", "/v1/businesses").token(&admin).json(&body).send().await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert!(r.json["details"].is_array(), "{}", r.text);
    }
    let st = &gw.super_token;
    for (path, body) in [
        ("/v1/admin/orgs".to_string(), json!({"name": "x", "plan": "gold"})),
        ("/v1/admin/orgs".to_string(), json!({"plan": "standard"})),
        (format!("/v1/admin/orgs/{org}/tokens"), json!({"role": "owner", "email": "a@b.c"})),
        (format!("/v1/admin/orgs/{org}/tokens"), json!({"role": "admin", "email": "not an email"})),
        (format!("/v1/admin/orgs/{org}/tokens"), json!({"role": "super_admin", "email": "a@b.co"})),
    ] {
        let r = gw.req("POST", &path).token(st).json(&body).send().await;
        assert_error(&r, 400, "VALIDATION_FAILED");
        assert!(r.json["details"][0]["field"].as_str().is_some(), "{}", r.text);
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_health_endpoints_answer() {
    let (_db, gw) = gateway().await;
    let r = gw.req("GET", "/healthz").header("x-request-id", "abc-123").send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = gw.req("GET", "/readyz").header("x-request-id", "bad id with spaces").send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rid = r.header("x-request-id").unwrap();
    assert!(rid.len() >= 16 && !rid.contains(' '));
    let r = gw.req("GET", "/v1/whoami").header("x-request-id", "req-7").send().await;
    assert_eq!(r.json["request_id"], "req-7");
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let (_db, mut gw) = gateway().await;
    let org = gw.create_org("Acme", None).await;
    let (t, _, _) = gw.create_token(&org, "member", "secret.person@acme.test").await;
    let r = gw.req("GET", "/v1/whoami").token(&t).header("x-request-id", "log-check-1").send().await;
    assert_eq!(r.status, 200);
    gw.terminate().await;
    let log = gw.stderr();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "log-check-1")
        .expect("access line");
    assert_eq!(line["route"], "whoami");
    assert_eq!(line["org_id"], org.as_str());
    assert_eq!(line["role"], "member");
    assert_eq!(line["status"], 200);
    assert!(line["latency_us"].is_u64());
    for secret in [t.as_str(), gw.super_token.as_str(), "secret.person", "acme.test"] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
}
