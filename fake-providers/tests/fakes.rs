//! The fakes behave as their providers document: auth, shapes, limits, faults, webhooks.

use bytes::Bytes;
use fake_providers::{smartlead, FakeHeyreach, FakeSmartlead, Fault};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Option<String>, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = client.request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn smartlead_campaign_lifecycle_limits_and_faults() {
    let sl = FakeSmartlead::start("sl-key").await.unwrap();
    let url = |p: &str| format!("{}{p}?api_key=sl-key", sl.base_url());
    assert_eq!(call("GET", &format!("{}/campaigns?api_key=wrong", sl.base_url()), &[], None).await.0, 401);
    assert_eq!(call("GET", &format!("{}/campaigns", sl.base_url()), &[], None).await.0, 401);
    let (s, _, v) = call("POST", &url("/campaigns/create"), &[], Some(json!({"name": "Q1"}))).await;
    assert_eq!((s, v["ok"].clone(), v["name"].clone()), (200, json!(true), json!("Q1")));
    let id = v["id"].as_i64().unwrap();
    assert_eq!(sl.state().campaigns[&id].status, "DRAFTED");
    let (_, _, list) = call("GET", &url("/campaigns"), &[], None).await;
    assert_eq!(list[0]["id"], id);

    let seq = json!({"sequences": [{"id": null, "seq_number": 1, "subject": "Hi", "email_body": "Hello", "seq_delay_details": {"delay_in_days": 0}}]});
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/sequences")), &[], Some(seq.clone())).await.0, 200);
    assert!(sl.state().campaigns[&id].sequences[0]["id"].is_i64());
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/status")), &[], Some(json!({"status": "ACTIVE"}))).await.0, 400);
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/status")), &[], Some(json!({"status": "START"}))).await.0, 200);
    assert_eq!(sl.state().campaigns[&id].status, "ACTIVE");
    // No sequence change while ACTIVE.
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/sequences")), &[], Some(seq.clone())).await.0, 400);

    let leads: Vec<Value> = (0..3).map(|i| json!({"email": format!("l{i}@x.test"), "first_name": "L"})).chain([json!({"email": "l0@x.test"}), json!({"email": "nope"})]).collect();
    let (s, _, v) = call("POST", &url(&format!("/campaigns/{id}/leads")), &[], Some(json!({"lead_list": leads, "settings": {}}))).await;
    assert_eq!((s, v["upload_count"].clone(), v["duplicate_count"].clone(), v["invalid_email_count"].clone(), v["skipped_count"].clone()), (200, json!(3), json!(1), json!(1), json!(2)));
    let again = call("POST", &url(&format!("/campaigns/{id}/leads")), &[], Some(json!({"lead_list": [{"email": "L1@x.test"}]}))).await.2;
    assert_eq!((again["upload_count"].clone(), again["already_added_to_campaign"].clone()), (json!(0), json!(1)));
    let too_many: Vec<Value> = (0..401).map(|i| json!({"email": format!("m{i}@x.test")})).collect();
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/leads")), &[], Some(json!({"lead_list": too_many}))).await.0, 400);
    let (_, _, page) = call("GET", &format!("{}/campaigns/{id}/leads?api_key=sl-key&offset=0&limit=100", sl.base_url()), &[], None).await;
    assert_eq!(page["total_leads"], 3);
    let lead = page["data"][1]["lead"]["id"].as_i64().unwrap();
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/leads/{lead}/pause")), &[], None).await.0, 200);
    assert_eq!(sl.state().lead(id, lead).unwrap().status, "PAUSED");
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/leads/{lead}/resume")), &[], Some(json!({"resume_lead_with_delay_days": 0}))).await.0, 200);
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/leads/{lead}/unsubscribe")), &[], None).await.0, 200);
    assert!(sl.state().lead(id, lead).unwrap().unsubscribed);
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/leads/999999/pause")), &[], None).await.0, 404);

    // STOPPED is final.
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/status")), &[], Some(json!({"status": "STOPPED"}))).await.0, 200);
    assert_eq!(call("POST", &url(&format!("/campaigns/{id}/status")), &[], Some(json!({"status": "START"}))).await.0, 400);
    assert_eq!(sl.state().campaigns[&id].status, "STOPPED");

    let (_, _, accounts) = call("GET", &url("/email-accounts/"), &[], None).await;
    assert_eq!(accounts.as_array().unwrap().len(), 2);
    let (_, _, page2) = call("GET", &format!("{}/email-accounts/?api_key=sl-key&offset=1&limit=100", sl.base_url()), &[], None).await;
    assert_eq!(page2.as_array().unwrap().len(), 1);
    let hook = json!({"webhook_url": "http://127.0.0.1:1/v1/webhooks/x", "association_type": "user", "event_type_map": {"EMAIL_REPLY": true}});
    let (s, _, v) = call("POST", &url("/webhook/create"), &[], Some(hook)).await;
    assert_eq!((s, v["ok"].clone()), (200, json!(true)));
    assert_eq!(sl.state().webhooks[0].webhook_url, "http://127.0.0.1:1/v1/webhooks/x");

    // Faults: the next two calls, recorded like any other.
    sl.clear_calls();
    sl.fail_next(1, Fault::RateLimited { retry_after_secs: 7 });
    sl.fail_next(1, Fault::Status(503));
    assert_eq!(call("GET", &url("/campaigns"), &[], None).await.0, 429);
    assert_eq!(call("GET", &url("/campaigns"), &[], None).await.0, 503);
    assert_eq!(call("GET", &url("/campaigns"), &[], None).await.0, 200);
    let calls = sl.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].query_param("api_key"), Some("sl-key"));
}

#[tokio::test]
async fn smartlead_retry_after_is_sent() {
    let sl = FakeSmartlead::start("k").await.unwrap();
    sl.fail_next(1, Fault::RateLimited { retry_after_secs: 7 });
    let (s, retry, _) = call("GET", &format!("{}/campaigns?api_key=k", sl.base_url()), &[], None).await;
    assert_eq!((s, retry.as_deref()), (429, Some("7")));
}

#[test]
fn smartlead_events_in_both_spellings_and_signature() {
    let e = smartlead::Event::reply(5, "lead@x.test", "<m1@x>", "yes");
    let p = e.payload(Some("s3cret"));
    assert_eq!((p["event_type"].clone(), p["reply_message"]["message_id"].clone(), p["secret_key"].clone()), (json!("EMAIL_REPLY"), json!("<m1@x>"), json!("s3cret")));
    let old = e.clone().legacy().payload(None);
    assert_eq!((old["event"].clone(), old.get("event_type"), old.get("secret_key")), (json!("EMAIL_REPLIED"), None, None));
    let open = smartlead::Event::engagement("EMAIL_OPEN", 5, "lead@x.test", None).payload(None);
    assert!(open.get("message_id").is_none() && open.get("reply_message").is_none());
    let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(b"key").unwrap();
    hmac::Mac::update(&mut m, b"body");
    assert_eq!(smartlead::signature("key", b"body"), format!("sha256={}", hex::encode(hmac::Mac::finalize(m).into_bytes())));
}

#[tokio::test]
async fn heyreach_rpc_calls_caps_and_auth() {
    let hr = FakeHeyreach::start("hr-key").await.unwrap();
    let key = [("x-api-key", "hr-key")];
    let u = |p: &str| format!("{}{p}", hr.base_url());
    assert_eq!(call("GET", &u("/auth/CheckApiKey"), &[("x-api-key", "bad")], None).await.0, 401);
    assert_eq!(call("GET", &u("/auth/CheckApiKey"), &key, None).await.0, 200);
    let (_, _, all) = call("POST", &u("/campaign/GetAll"), &key, Some(json!({"offset": 0, "limit": 10}))).await;
    let id = all["items"][0]["id"].as_i64().unwrap();
    assert_eq!(all["items"][0]["status"], "IN_PROGRESS");
    let second = hr.add_campaign("Founders in Berlin");
    let (_, _, found) = call("POST", &u("/campaign/GetAllCampaigns"), &key, Some(json!({"offset": 0, "limit": 10, "keyword": "berlin"}))).await;
    assert_eq!((found["totalCount"].clone(), found["items"][0]["id"].clone()), (json!(1), json!(second)));
    assert_eq!(call("POST", &u(&format!("/campaign/Pause?campaignId={id}")), &key, None).await.2["status"], "PAUSED");
    assert_eq!(call("POST", &u("/campaign/Resume"), &key, Some(json!({"campaignId": id}))).await.2["status"], "IN_PROGRESS");
    assert_eq!(call("GET", &u(&format!("/campaign/GetById?campaignId={id}")), &key, None).await.2["id"], id);
    let (_, _, senders) = call("POST", &u("/li_account/GetAll"), &key, Some(json!({}))).await;
    let sender = senders["items"][0]["id"].as_i64().unwrap();
    let pair = |url: &str| json!({"linkedInAccountId": sender, "lead": {"firstName": "A", "profileUrl": url, "customUserFields": [{"name": "x", "value": "y"}]}});
    let body = json!({"campaignId": id, "accountLeadPairs": [pair("https://www.linkedin.com/in/a"), pair("https://www.linkedin.com/in/b"), pair("not a url")]});
    let (_, _, v) = call("POST", &u("/campaign/AddLeadsToCampaignV2"), &key, Some(body)).await;
    assert_eq!(v, json!({"addedLeadsCount": 2, "updatedLeadsCount": 0, "failedLeadsCount": 1}));
    let (_, _, v) = call("POST", &u("/campaign/AddLeadsToCampaignV2"), &key, Some(json!({"campaignId": id, "accountLeadPairs": [pair("https://www.linkedin.com/in/a/")]}))).await;
    assert_eq!(v, json!({"addedLeadsCount": 0, "updatedLeadsCount": 1, "failedLeadsCount": 0}));
    let many: Vec<Value> = (0..101).map(|i| pair(&format!("https://www.linkedin.com/in/p{i}"))).collect();
    assert_eq!(call("POST", &u("/campaign/AddLeadsToCampaignV2"), &key, Some(json!({"campaignId": id, "accountLeadPairs": many}))).await.0, 400);
    assert_eq!(call("POST", &u("/campaign/StopLeadInCampaign"), &key, Some(json!({"campaignId": id, "leadUrl": "https://www.linkedin.com/in/b"}))).await.0, 200);
    assert_eq!(hr.state().campaigns[&id].leads[1].status, "STOPPED");
    let hook = json!({"webhookName": "gw", "webhookUrl": "http://127.0.0.1:1/v1/webhooks/x?secret=t", "eventType": "MESSAGE_REPLY_RECEIVED", "campaignIds": []});
    assert_eq!(call("POST", &u("/webhooks/CreateWebhook"), &key, Some(hook)).await.0, 200);
    assert_eq!(hr.state().webhooks[0].url, "http://127.0.0.1:1/v1/webhooks/x?secret=t");
    assert!(hr.calls().iter().all(|c| c.header("x-api-key").is_some()));
}

#[tokio::test]
async fn chat_checks_the_bearer_key_answers_a_deterministic_proposal_and_fails_on_demand() {
    let ai = fake_providers::FakeChat::start("ai-key").await.unwrap();
    let url = format!("{}/chat/completions", ai.base_url());
    let user = json!({"campaign": {"channel": "email"}, "steps": [
        {"seq_number": 1, "subject": "a", "sent": 100, "opened": 30},
        {"seq_number": 2, "subject": "b", "sent": 100, "opened": 5},
        {"seq_number": 3, "subject": "c", "sent": 0, "opened": 0}]});
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": user.to_string()}],
                      "response_format": {"type": "json_object"}, "temperature": 0.2});
    let (s, _, v) = call("POST", &url, &[("authorization", "Bearer wrong")], Some(body.clone())).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(call("POST", &url, &[], Some(body.clone())).await.0, 401);
    let (s, _, v) = call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body.clone())).await;
    assert_eq!(s, 200);
    assert_eq!(v["model"], "gpt-4o-mini");
    let content: Value = serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["proposals"][0]["seq_number"], 2);
    assert_eq!(content["proposals"][0]["optimization_type"], "update_subject");
    assert!(!content["proposals"][0]["rationale"].as_str().unwrap().contains("ai-key"));
    ai.echo_authorization(true);
    let (_, _, v) = call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body.clone())).await;
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("authorization seen: Bearer ai-key"));
    ai.set_content(Some("not json"));
    let (_, _, v) = call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body.clone())).await;
    assert_eq!(v["choices"][0]["message"]["content"], "not json");
    ai.fail_next(1, Fault::Status(503));
    ai.fail_next(1, Fault::RateLimited { retry_after_secs: 7 });
    assert_eq!(call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body.clone())).await.0, 503);
    let (s, retry, _) = call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body.clone())).await;
    assert_eq!((s, retry.as_deref()), (429, Some("7")));
    assert_eq!(ai.calls().len(), 7);
    assert_eq!(ai.calls()[2].header("authorization"), Some("Bearer ai-key"));
    // The control API queues faults too.
    let (s, _, _) = call("POST", &format!("http://{}/_fake/fail", ai.addr()), &[], Some(json!({"n": 1, "status": 502}))).await;
    assert_eq!(s, 200);
    assert_eq!(call("POST", &url, &[("authorization", "Bearer ai-key")], Some(body)).await.0, 502);
}
