//! Fake HeyReach (`https://api.heyreach.io/api/public`): RPC style, `X-API-KEY` on every call.
//!
//! Served: `GET /auth/CheckApiKey`, `POST /campaign/GetAll` (also `GetAllCampaigns`),
//! `GET /campaign/GetById?campaignId=`, `POST /campaign/Pause|Resume` (`campaignId` in the
//! query or the body), `POST /campaign/AddLeadsToCampaignV2` (at most 100 pairs; added,
//! updated and failed counts; leads deduplicated by `profileUrl`),
//! `POST /campaign/StopLeadInCampaign`, `POST /li_account/GetAll`,
//! `POST /webhooks/CreateWebhook`. HeyReach has no public call that creates a campaign: they
//! are made in its UI, here with [`FakeHeyreach::add_campaign`] or `POST /_fake/campaigns`.
//! Webhooks are unsigned: the registered URL carries the secret (`?secret=`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::core::{self, control_body, now_iso, Answer, Api, Core, Delivered, Fault, Recorded};
use crate::smartlead::{calls_json, deliveries_answer};
use crate::Error;

pub const PREFIX: &str = "/api/public";
/// Most account/lead pairs one `AddLeadsToCampaignV2` takes.
pub const MAX_LEADS_PER_CALL: usize = 100;

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    /// `DRAFT`, `IN_PROGRESS`, `PAUSED`, `FINISHED`, `CANCELED`.
    pub status: String,
    pub created_at: String,
    pub leads: Vec<Lead>,
}

#[derive(Debug, Clone)]
pub struct Lead {
    pub profile_url: String,
    pub linkedin_account_id: i64,
    /// The lead object as last sent.
    pub lead: Value,
    /// `IN_PROGRESS` or `STOPPED`.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct Sender {
    pub id: i64,
    pub email_address: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub event_type: String,
    pub campaign_ids: Vec<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct State {
    pub campaigns: BTreeMap<i64, Campaign>,
    pub senders: Vec<Sender>,
    pub webhooks: Vec<Webhook>,
    next_id: i64,
}

impl State {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A webhook event as HeyReach sends it (third-party notes: HeyReach publishes no schema).
#[derive(Debug, Clone)]
pub struct Event {
    /// `MESSAGE_REPLY_RECEIVED`, `INMAIL_REPLY_RECEIVED`, `CONNECTION_REQUEST_ACCEPTED`,
    /// `CONNECTION_REQUEST_SENT`, `MESSAGE_SENT`, `CAMPAIGN_COMPLETED`, …
    pub event_type: String,
    pub campaign_id: i64,
    pub profile_url: String,
    pub message_id: Option<String>,
    pub text: String,
    pub timestamp: String,
}

impl Event {
    pub fn reply(campaign_id: i64, profile_url: &str, message_id: &str, text: &str) -> Event {
        Event {
            event_type: "MESSAGE_REPLY_RECEIVED".into(),
            campaign_id,
            profile_url: profile_url.into(),
            message_id: Some(message_id.into()),
            text: text.into(),
            timestamp: now_iso(),
        }
    }

    pub fn other(event_type: &str, campaign_id: i64, profile_url: &str) -> Event {
        Event { event_type: event_type.into(), campaign_id, profile_url: profile_url.into(), message_id: None, text: String::new(), timestamp: now_iso() }
    }

    pub fn payload(&self) -> Value {
        let mut v = json!({
            "eventType": self.event_type,
            "leadProfile": {"linkedInUrl": self.profile_url, "firstName": "Lee", "lastName": "Lead", "emailAddress": null},
            "campaign": {"id": self.campaign_id, "name": format!("Campaign {}", self.campaign_id)},
            "timestamp": self.timestamp,
        });
        if let Some(m) = &self.message_id {
            v["message"] = json!({"id": m, "text": self.text});
        }
        v
    }
}

struct Inner {
    core: Core,
    state: Mutex<State>,
}

/// A running fake HeyReach; stops when dropped.
pub struct FakeHeyreach {
    inner: Arc<Inner>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHeyreach {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHeyreach {
    pub async fn start(api_key: &str) -> Result<FakeHeyreach, Error> {
        FakeHeyreach::start_on("127.0.0.1:0", api_key).await
    }

    /// With two LinkedIn senders and one campaign (`IN_PROGRESS`) made "in the UI".
    pub async fn start_on(addr: &str, api_key: &str) -> Result<FakeHeyreach, Error> {
        let mut state = State::default();
        for (first, last) in [("Ada", "Sender"), ("Bob", "Sender")] {
            let id = state.id();
            state.senders.push(Sender { id, email_address: format!("{}@sender.example", first.to_lowercase()), first_name: first.into(), last_name: last.into() });
        }
        let inner = Arc::new(Inner { core: Core::new(api_key), state: Mutex::new(state) });
        let (addr, task) = core::serve(addr, inner.clone()).await?;
        let fake = FakeHeyreach { inner, addr, task };
        fake.add_campaign("LinkedIn outreach");
        Ok(fake)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/api/public`: an org's `base_url` for HeyReach.
    pub fn base_url(&self) -> String {
        format!("http://{}{PREFIX}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.core.api_key
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.inner.core.calls.lock().unwrap().clone()
    }

    pub fn clear_calls(&self) {
        self.inner.core.calls.lock().unwrap().clear();
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.inner.core.fail_next(n, fault);
    }

    pub fn state(&self) -> State {
        self.inner.state.lock().unwrap().clone()
    }

    /// A campaign as made in HeyReach's UI (`IN_PROGRESS`); its id.
    pub fn add_campaign(&self, name: &str) -> i64 {
        let mut st = self.inner.state.lock().unwrap();
        let id = st.id();
        st.campaigns.insert(id, Campaign { id, name: name.into(), status: "IN_PROGRESS".into(), created_at: now_iso(), leads: vec![] });
        id
    }

    /// POSTs `event` to `url` (the registered URL, with its `?secret=`), unsigned.
    pub async fn deliver(&self, url: &str, event: &Event) -> Result<Delivered, Error> {
        core::post(url, &[], event.payload().to_string().into_bytes()).await
    }

    /// Delivers `event` to every registered webhook for its type (and campaign).
    pub async fn deliver_to_registered(&self, event: &Event) -> Result<Vec<(String, Delivered)>, Error> {
        self.inner.deliver_to_registered(event).await
    }
}

impl Inner {
    async fn deliver_to_registered(&self, event: &Event) -> Result<Vec<(String, Delivered)>, Error> {
        let urls: Vec<String> = {
            let st = self.state.lock().unwrap();
            st.webhooks
                .iter()
                .filter(|w| w.event_type == event.event_type && (w.campaign_ids.is_empty() || w.campaign_ids.contains(&event.campaign_id)))
                .map(|w| w.url.clone())
                .collect()
        };
        let mut out = vec![];
        for url in urls {
            let d = core::post(&url, &[], event.payload().to_string().into_bytes()).await?;
            out.push((url, d));
        }
        Ok(out)
    }

    async fn control(self: Arc<Self>, call: Recorded) -> Answer {
        let b = control_body(&call);
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/_fake/state") => Answer::json(200, state_json(&self.state.lock().unwrap())),
            ("GET", "/_fake/calls") => Answer::json(200, calls_json(&self.core.calls.lock().unwrap())),
            ("POST", "/_fake/campaigns") => {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("LinkedIn outreach").to_string();
                let mut st = self.state.lock().unwrap();
                let id = st.id();
                st.campaigns.insert(id, Campaign { id, name, status: "IN_PROGRESS".into(), created_at: now_iso(), leads: vec![] });
                Answer::json(201, json!({"id": id}))
            }
            ("POST", "/_fake/send-reply" | "/_fake/send-event") => {
                let text = |k: &str, d: &str| b.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
                let campaign_id = b.get("campaign_id").and_then(Value::as_i64).or_else(|| self.state.lock().unwrap().campaigns.keys().next_back().copied()).unwrap_or(1);
                let profile = text("profile_url", "https://www.linkedin.com/in/lee-lead");
                let event = if call.path == "/_fake/send-reply" {
                    let id = format!("msg-{}", now_iso());
                    Event::reply(campaign_id, &profile, &text("message_id", &id), &text("text", "Happy to chat."))
                } else {
                    Event::other(&text("event_type", "CONNECTION_REQUEST_ACCEPTED"), campaign_id, &profile)
                };
                let result = match b.get("url").and_then(Value::as_str) {
                    Some(url) => core::post(url, &[], event.payload().to_string().into_bytes()).await.map(|d| vec![(url.to_string(), d)]),
                    None => self.deliver_to_registered(&event).await,
                };
                deliveries_answer(result)
            }
            _ => Answer::json(404, json!({"message": "unknown control call"})),
        }
    }

    fn api(&self, call: &Recorded) -> Answer {
        if call.header("x-api-key") != Some(self.core.api_key.as_str()) {
            return Answer::json(401, json!({"errorMessage": "Unauthorized"}));
        }
        let Some(rest) = call.path.strip_prefix(PREFIX) else { return not_found() };
        let body = call.json();
        let mut st = self.state.lock().unwrap();
        let campaign_param = || {
            call.query_param("campaignId").and_then(|v| v.parse::<i64>().ok()).or_else(|| body.get("campaignId").and_then(Value::as_i64))
        };
        match (call.method.as_str(), rest.trim_end_matches('/')) {
            ("GET", "/auth/CheckApiKey") => Answer::empty(200),
            ("POST", "/campaign/GetAll" | "/campaign/GetAllCampaigns") => {
                let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
                // `keyword` filters by name (case-insensitive substring), as HeyReach's UI search does.
                let keyword = body.get("keyword").and_then(Value::as_str).unwrap_or_default().to_lowercase();
                let matching: Vec<&Campaign> = st.campaigns.values().filter(|c| c.name.to_lowercase().contains(&keyword)).collect();
                let items: Vec<Value> = matching.iter().skip(offset).take(limit).map(|c| campaign_json(c)).collect();
                Answer::json(200, json!({"totalCount": matching.len(), "items": items}))
            }
            ("GET", "/campaign/GetById") => match campaign_param().and_then(|id| st.campaigns.get(&id)) {
                Some(c) => Answer::json(200, campaign_json(c)),
                None => not_found(),
            },
            ("POST", path @ ("/campaign/Pause" | "/campaign/Resume")) => {
                let Some(c) = campaign_param().and_then(|id| st.campaigns.get_mut(&id)) else { return not_found() };
                let pause = path.ends_with("Pause");
                match (pause, c.status.as_str()) {
                    (true, "IN_PROGRESS" | "DRAFT") => c.status = "PAUSED".into(),
                    (false, "PAUSED") => c.status = "IN_PROGRESS".into(),
                    (_, s) if (pause && s == "PAUSED") || (!pause && s == "IN_PROGRESS") => {}
                    _ => return bad(&format!("campaign is {}", c.status)),
                }
                Answer::json(200, campaign_json(c))
            }
            ("POST", "/campaign/AddLeadsToCampaignV2") => {
                let Some(cid) = body.get("campaignId").and_then(Value::as_i64).filter(|c| st.campaigns.contains_key(c)) else { return not_found() };
                let Some(pairs) = body.get("accountLeadPairs").and_then(Value::as_array) else { return bad("accountLeadPairs must be an array") };
                if pairs.len() > MAX_LEADS_PER_CALL {
                    return bad("accountLeadPairs can hold at most 100 leads");
                }
                let (mut added, mut updated, mut failed) = (0, 0, 0);
                for pair in pairs {
                    let account = pair.get("linkedInAccountId").and_then(Value::as_i64).filter(|a| st.senders.iter().any(|s| s.id == *a));
                    let lead = pair.get("lead").cloned().unwrap_or(Value::Null);
                    let url = lead.get("profileUrl").and_then(Value::as_str).filter(|u| u.contains("linkedin.com/")).map(|u| u.trim_end_matches('/').to_string());
                    let (Some(account), Some(url)) = (account, url) else {
                        failed += 1;
                        continue;
                    };
                    let c = st.campaigns.get_mut(&cid).unwrap();
                    match c.leads.iter_mut().find(|l| l.profile_url == url) {
                        Some(l) => {
                            l.lead = lead;
                            l.linkedin_account_id = account;
                            updated += 1;
                        }
                        None => {
                            c.leads.push(Lead { profile_url: url, linkedin_account_id: account, lead, status: "IN_PROGRESS".into() });
                            added += 1;
                        }
                    }
                }
                Answer::json(200, json!({"addedLeadsCount": added, "updatedLeadsCount": updated, "failedLeadsCount": failed}))
            }
            ("POST", "/campaign/StopLeadInCampaign") => {
                let Some(c) = campaign_param().and_then(|id| st.campaigns.get_mut(&id)) else { return not_found() };
                let url = body.get("leadUrl").and_then(Value::as_str).map(|u| u.trim_end_matches('/'));
                match c.leads.iter_mut().find(|l| Some(l.profile_url.as_str()) == url) {
                    Some(l) => {
                        l.status = "STOPPED".into();
                        Answer::empty(200)
                    }
                    None => not_found(),
                }
            }
            ("POST", "/li_account/GetAll") => {
                let offset = body.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
                let items: Vec<Value> = st
                    .senders
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|s| json!({"id": s.id, "emailAddress": s.email_address, "firstName": s.first_name, "lastName": s.last_name,
                                    "isActive": true, "activeCampaigns": 1, "authIsValid": true, "isValidNavigator": false}))
                    .collect();
                Answer::json(200, json!({"totalCount": st.senders.len(), "items": items}))
            }
            ("POST", "/webhooks/CreateWebhook") => {
                let name = body.get("webhookName").and_then(Value::as_str);
                let url = body.get("webhookUrl").and_then(Value::as_str);
                let event = body.get("eventType").and_then(Value::as_str);
                let (Some(name), Some(url), Some(event)) = (name, url, event) else {
                    return bad("webhookName, webhookUrl and eventType are required");
                };
                let campaign_ids: Vec<i64> = body.get("campaignIds").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
                let id = st.id();
                st.webhooks.push(Webhook { id, name: name.into(), url: url.into(), event_type: event.into(), campaign_ids: campaign_ids.clone() });
                Answer::json(200, json!({"id": id, "webhookName": name, "webhookUrl": url, "eventType": event, "campaignIds": campaign_ids, "isActive": true}))
            }
            _ => not_found(),
        }
    }
}

impl Api for Inner {
    fn handle(self: Arc<Self>, call: Recorded) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async move {
            if call.path.starts_with("/_fake/") {
                return self.control(call).await;
            }
            if let Some(fault) = self.core.record(&call) {
                return fault;
            }
            self.api(&call)
        })
    }
}

fn campaign_json(c: &Campaign) -> Value {
    json!({"id": c.id, "name": c.name, "status": c.status, "creationTime": c.created_at, "campaignAccountIds": [], "progressStats": {"totalUsers": c.leads.len()}})
}

fn state_json(st: &State) -> Value {
    json!({
        "campaigns": st.campaigns.values().map(|c| {
            let mut v = campaign_json(c);
            v["leads"] = Value::Array(c.leads.iter().map(|l| json!({"profileUrl": l.profile_url, "linkedInAccountId": l.linkedin_account_id, "status": l.status, "lead": l.lead})).collect());
            v
        }).collect::<Vec<_>>(),
        "senders": st.senders.iter().map(|s| json!({"id": s.id, "emailAddress": s.email_address})).collect::<Vec<_>>(),
        "webhooks": st.webhooks.iter().map(|w| json!({"id": w.id, "webhookName": w.name, "webhookUrl": w.url, "eventType": w.event_type, "campaignIds": w.campaign_ids})).collect::<Vec<_>>(),
    })
}

fn bad(message: &str) -> Answer {
    Answer::json(400, json!({"errorMessage": message}))
}

fn not_found() -> Answer {
    Answer::json(404, json!({"errorMessage": "Not Found"}))
}
