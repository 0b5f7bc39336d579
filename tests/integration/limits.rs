//! Rate limits across tenants: a noisy neighbour does not starve others, and plans change live.

use std::path::PathBuf;

use serde_json::json;

use crate::harness::{assert_error, policies_with, Gateway, GatewayOptions, TestDb};

/// The repository's policies plus a small plan whose org-wide quota is easy to exhaust.
fn policies_with_small_plan() -> PathBuf {
    policies_with("zz-test-plans.toml", "[plans.small]\nper_org = { rate = \"10/s\", burst = 10 }\n")
}

#[tokio::test]
async fn noisy_neighbour_gets_429s_while_the_other_org_gets_none() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with_small_plan();
    let gw = Gateway::start_with(opts).await;
    let a = gw.create_org("Noisy", Some("small")).await;
    let b = gw.create_org("Quiet", Some("small")).await;
    let mut noisy_tokens = Vec::new();
    for i in 0..4 {
        noisy_tokens.push(gw.create_token(&a, "member", &format!("n{i}@noisy.test")).await.0);
    }
    let (quiet, _, _) = gw.create_token(&b, "member", "q@quiet.test").await;

    let gw = &gw;
    let noisy = async {
        let mut tasks = Vec::new();
        for t in &noisy_tokens {
            tasks.push(async move {
                let mut counts = (0u32, 0u32);
                for _ in 0..60 {
                    match gw.req("GET", "/v1/whoami").token(t).send().await.status {
                        200 => counts.0 += 1,
                        429 => counts.1 += 1,
                        s => panic!("unexpected {s}"),
                    }
                }
                counts
            });
        }
        futures::future::join_all(tasks).await
    };
    let quiet_run = async {
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(gw.req("GET", "/v1/whoami").token(&quiet).send().await.status);
        }
        statuses
    };
    let (noisy_counts, quiet_statuses) = tokio::join!(noisy, quiet_run);
    let limited: u32 = noisy_counts.iter().map(|c| c.1).sum();
    let served: u32 = noisy_counts.iter().map(|c| c.0).sum();
    assert!(limited >= 100, "noisy org got only {limited} 429s ({served} served)");
    assert!(quiet_statuses.iter().all(|s| *s == 200), "quiet org was limited: {quiet_statuses:?}");
}

#[tokio::test]
async fn changing_the_plan_changes_the_quota_live() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with_small_plan();
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Grower", Some("small")).await;
    let (t, _, _) = gw.create_token(&org, "member", "g@grow.test").await;
    let mut saw_429 = false;
    for _ in 0..30 {
        if gw.req("GET", "/v1/whoami").token(&t).send().await.status == 429 {
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "small plan never limited");
    let r = gw
        .req("PATCH", &format!("/v1/admin/orgs/{org}"))
        .token(&gw.super_token)
        .json(&json!({"plan": "unmetered"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for _ in 0..100 {
        let r = gw.req("GET", "/v1/whoami").token(&t).send().await;
        assert_eq!(r.status, 200, "unmetered org was limited: {}", r.text);
    }
    let r = gw
        .req("PATCH", &format!("/v1/admin/orgs/{org}"))
        .token(&gw.super_token)
        .json(&json!({"plan": "platinum"}))
        .send()
        .await;
    assert_error(&r, 400, "VALIDATION_FAILED");
}
