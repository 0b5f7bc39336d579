//! Fake Smartlead (`https://server.smartlead.ai/api/v1`): REST, `?api_key=` on every call.
//!
//! Served: `GET /campaigns`, `POST /campaigns/create`, `GET /campaigns/{id}`,
//! `POST /campaigns/{id}/status` (`START`|`PAUSED`|`STOPPED`; `STOPPED` is final),
//! `GET|POST /campaigns/{id}/sequences` (refused while `ACTIVE`), `GET|POST
//! /campaigns/{id}/leads` (at most 400 per call; added and skipped counts),
//! `POST /campaigns/{id}/leads/{lead_id}/pause|resume|unsubscribe`,
//! `GET /campaigns/{id}/leads/{lead_id}/message-history`, `POST /leads/{lead_id}/unsubscribe`,
//! `GET /leads/?email=`, `GET /email-accounts/`, `POST /webhook/create`.
//! Errors are `{"message": ...}` with 400, 401 or 404.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::core::{self, control_body, now_iso, Answer, Api, Core, Delivered, Fault, Recorded};
use crate::Error;

/// Where Smartlead's API lives under a base URL.
pub const PREFIX: &str = "/api/v1";
/// Most leads one `POST /campaigns/{id}/leads` takes.
pub const MAX_LEADS_PER_CALL: usize = 400;

#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub client_id: Option<i64>,
    /// `DRAFTED`, `ACTIVE`, `PAUSED`, `STOPPED`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    /// The steps as last saved (with their ids).
    pub sequences: Vec<Value>,
    pub leads: Vec<Lead>,
}

#[derive(Debug, Clone)]
pub struct Lead {
    /// Smartlead's lead id (one per email address, across campaigns).
    pub id: i64,
    pub campaign_lead_map_id: i64,
    pub email: String,
    /// The lead as sent (`first_name`, `last_name`, `company_name`, `custom_fields`…).
    pub fields: Value,
    /// `STARTED`, `INPROGRESS`, `PAUSED`.
    pub status: String,
    pub unsubscribed: bool,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub webhook_url: String,
    pub association_type: String,
    pub email_campaign_id: Option<i64>,
    pub event_type_map: Value,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EmailAccount {
    pub id: i64,
    pub from_name: String,
    pub from_email: String,
}

/// Everything the fake holds; [`FakeSmartlead::state`] gives a copy.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub campaigns: BTreeMap<i64, Campaign>,
    pub webhooks: Vec<Webhook>,
    pub email_accounts: Vec<EmailAccount>,
    /// Emails unsubscribed from everything (`POST /leads/{id}/unsubscribe`).
    pub global_unsubscribes: Vec<String>,
    lead_ids: BTreeMap<String, i64>,
    next_id: i64,
}

impl State {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// The campaign a lead with this id is in, and the lead.
    pub fn lead(&self, campaign: i64, lead: i64) -> Option<&Lead> {
        self.campaigns.get(&campaign)?.leads.iter().find(|l| l.id == lead)
    }
}

/// How a delivery proves itself (Smartlead documents both, inconsistently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `secret_key` in the body.
    BodySecret,
    /// `X-Smartlead-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
    Signature,
    Both,
    /// Neither (an unauthenticated delivery).
    Neither,
}

/// Smartlead's two documented spellings of its webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `event_type`, `EMAIL_REPLY` (api.smartlead.ai/guides/webhook-integration).
    Current,
    /// `event`, `EMAIL_REPLIED` (older pages, api.smartlead.ai/core/webhooks).
    Legacy,
}

/// A webhook event as Smartlead sends it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `EMAIL_REPLY`, `EMAIL_SENT`, `EMAIL_OPEN`, `EMAIL_LINK_CLICK`, `EMAIL_BOUNCE`,
    /// `LEAD_UNSUBSCRIBED`, `LEAD_CATEGORY_UPDATED`, … in the current spelling.
    pub kind: String,
    pub spelling: Spelling,
    pub campaign_id: i64,
    pub lead_email: String,
    /// The reply's (or sent message's) id; opens and clicks carry none.
    pub message_id: Option<String>,
    pub stats_id: Option<String>,
    pub sequence_number: i64,
    pub text: String,
}

impl Event {
    pub fn reply(campaign_id: i64, lead_email: &str, message_id: &str, text: &str) -> Event {
        Event {
            kind: "EMAIL_REPLY".into(),
            spelling: Spelling::Current,
            campaign_id,
            lead_email: lead_email.into(),
            message_id: Some(message_id.into()),
            stats_id: Some(format!("stats-{message_id}")),
            sequence_number: 1,
            text: text.into(),
        }
    }

    /// An open (`EMAIL_OPEN`) or a click (`EMAIL_LINK_CLICK`): no message id.
    pub fn engagement(kind: &str, campaign_id: i64, lead_email: &str, stats_id: Option<&str>) -> Event {
        Event {
            kind: kind.into(),
            spelling: Spelling::Current,
            campaign_id,
            lead_email: lead_email.into(),
            message_id: None,
            stats_id: stats_id.map(str::to_string),
            sequence_number: 1,
            text: String::new(),
        }
    }

    pub fn legacy(mut self) -> Event {
        self.spelling = Spelling::Legacy;
        self
    }

    /// The event's name in its spelling.
    pub fn name(&self) -> &str {
        match (self.spelling, self.kind.as_str()) {
            (Spelling::Legacy, "EMAIL_REPLY") => "EMAIL_REPLIED",
            (_, k) => k,
        }
    }

    /// The JSON body, with `secret_key` when given.
    pub fn payload(&self, secret_key: Option<&str>) -> Value {
        let type_field = match self.spelling {
            Spelling::Current => "event_type",
            Spelling::Legacy => "event",
        };
        let now = now_iso();
        let mut v = json!({
            type_field: self.name(),
            "campaign_id": self.campaign_id,
            "campaign_name": format!("Campaign {}", self.campaign_id),
            "campaign_status": "ACTIVE",
            "sequence_number": self.sequence_number,
            "sl_email_lead_id": 1,
            "sl_email_lead_map_id": 1,
            "sl_lead_email": self.lead_email,
            "to_email": self.lead_email,
            "from_email": "outreach@sender.example",
            "event_timestamp": now,
            "app_url": format!("https://app.smartlead.ai/app/email-campaign/{}/analytics", self.campaign_id),
            "metadata": {"webhook_created_at": now},
        });
        if let Some(s) = &self.stats_id {
            v["stats_id"] = json!(s);
        }
        if let Some(m) = &self.message_id {
            if self.kind == "EMAIL_REPLY" {
                v["subject"] = json!("Re: hello");
                v["preview_text"] = json!(self.text.chars().take(100).collect::<String>());
                v["reply_message"] = json!({"message_id": m, "html": format!("<p>{}</p>", self.text), "text": self.text, "time": now});
                v["sent_message"] = json!({"message_id": format!("{m}-sent"), "html": "<p>hello</p>", "text": "hello", "time": now});
            } else {
                v["message_id"] = json!(m);
            }
        }
        if let Some(s) = secret_key {
            v["secret_key"] = json!(s);
        }
        v
    }
}

/// `sha256=<hex HMAC-SHA256 of body>` under `secret`, as `X-Smartlead-Signature` carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

struct Inner {
    core: Core,
    state: Mutex<State>,
    /// The secret typed into Smartlead's webhook settings.
    webhook_secret: Mutex<Option<String>>,
}

/// A running fake Smartlead; stops when dropped.
pub struct FakeSmartlead {
    inner: Arc<Inner>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSmartlead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSmartlead {
    /// On a free loopback port, accepting `api_key`.
    pub async fn start(api_key: &str) -> Result<FakeSmartlead, Error> {
        FakeSmartlead::start_on("127.0.0.1:0", api_key).await
    }

    pub async fn start_on(addr: &str, api_key: &str) -> Result<FakeSmartlead, Error> {
        let mut state = State::default();
        for (name, email) in [("Ada Sender", "ada@sender.example"), ("Bob Sender", "bob@sender.example")] {
            let id = state.id();
            state.email_accounts.push(EmailAccount { id, from_name: name.into(), from_email: email.into() });
        }
        let inner = Arc::new(Inner { core: Core::new(api_key), state: Mutex::new(state), webhook_secret: Mutex::new(None) });
        let (addr, task) = core::serve(addr, inner.clone()).await?;
        Ok(FakeSmartlead { inner, addr, task })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/api/v1`: an org's `base_url` for Smartlead.
    pub fn base_url(&self) -> String {
        format!("http://{}{PREFIX}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.core.api_key
    }

    /// Every API call so far (not the `/_fake/` control calls), oldest first.
    pub fn calls(&self) -> Vec<Recorded> {
        self.inner.core.calls.lock().unwrap().clone()
    }

    pub fn clear_calls(&self) {
        self.inner.core.calls.lock().unwrap().clear();
    }

    /// The next `n` calls get `fault` instead of an answer (recorded all the same).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.inner.core.fail_next(n, fault);
    }

    pub fn state(&self) -> State {
        self.inner.state.lock().unwrap().clone()
    }

    /// The secret typed into Smartlead's webhook settings: what deliveries prove.
    pub fn set_webhook_secret(&self, secret: Option<&str>) {
        *self.inner.webhook_secret.lock().unwrap() = secret.map(str::to_string);
    }

    pub fn add_email_account(&self, from_name: &str, from_email: &str) -> i64 {
        let mut st = self.inner.state.lock().unwrap();
        let id = st.id();
        st.email_accounts.push(EmailAccount { id, from_name: from_name.into(), from_email: from_email.into() });
        id
    }

    /// Delivers `event` to `url` as Smartlead would, proving it with the webhook secret.
    pub async fn deliver(&self, url: &str, event: &Event, auth: Auth) -> Result<Delivered, Error> {
        self.inner.deliver(url, event, auth).await
    }

    /// Delivers `event` to every registered webhook that asked for its kind.
    pub async fn deliver_to_registered(&self, event: &Event, auth: Auth) -> Result<Vec<(String, Delivered)>, Error> {
        self.inner.deliver_to_registered(event, auth).await
    }
}

impl Inner {
    async fn deliver(&self, url: &str, event: &Event, auth: Auth) -> Result<Delivered, Error> {
        let secret = self.webhook_secret.lock().unwrap().clone().unwrap_or_default();
        let in_body = matches!(auth, Auth::BodySecret | Auth::Both);
        let body = event.payload(in_body.then_some(secret.as_str())).to_string().into_bytes();
        let mut headers = vec![("x-request-id", format!("req-{}", now_iso()))];
        if matches!(auth, Auth::Signature | Auth::Both) {
            headers.push(("x-smartlead-signature", signature(&secret, &body)));
        }
        core::post(url, &headers, body).await
    }

    fn registered_for(&self, event: &Event) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.webhooks
            .iter()
            .filter(|w| match &w.event_type_map {
                Value::Object(m) if !m.is_empty() => m.get(&event.kind).and_then(Value::as_bool).unwrap_or(false),
                _ => true,
            })
            .filter(|w| w.association_type != "campaign" || w.email_campaign_id == Some(event.campaign_id))
            .map(|w| w.webhook_url.clone())
            .collect()
    }

    async fn deliver_to_registered(&self, event: &Event, auth: Auth) -> Result<Vec<(String, Delivered)>, Error> {
        let mut out = vec![];
        for url in self.registered_for(event) {
            let d = self.deliver(&url, event, auth).await?;
            out.push((url, d));
        }
        Ok(out)
    }

    async fn control(self: Arc<Self>, call: Recorded) -> Answer {
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/_fake/state") => Answer::json(200, state_json(&self.state.lock().unwrap())),
            ("GET", "/_fake/calls") => Answer::json(200, calls_json(&self.core.calls.lock().unwrap())),
            ("POST", "/_fake/send-reply" | "/_fake/send-event") => {
                let b = control_body(&call);
                let reply = call.path == "/_fake/send-reply";
                let text = |k: &str, d: &str| b.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
                let campaign_id = b.get("campaign_id").and_then(Value::as_i64).or_else(|| self.state.lock().unwrap().campaigns.keys().next_back().copied()).unwrap_or(1);
                let lead = text("lead_email", "lead@example.com");
                let mut event = if reply {
                    let id = format!("<{}@mail.example>", now_iso());
                    Event::reply(campaign_id, &lead, &text("message_id", &id), &text("text", "Sounds good, tell me more."))
                } else {
                    let stats = b.get("stats_id").and_then(Value::as_str);
                    let mut e = Event::engagement(&text("kind", "EMAIL_OPEN"), campaign_id, &lead, stats);
                    e.message_id = b.get("message_id").and_then(Value::as_str).map(str::to_string);
                    e
                };
                if text("spelling", "current") == "legacy" {
                    event = event.legacy();
                }
                let auth = match text("auth", "both").as_str() {
                    "body" => Auth::BodySecret,
                    "signature" => Auth::Signature,
                    "none" => Auth::Neither,
                    _ => Auth::Both,
                };
                if let Some(s) = b.get("secret").and_then(Value::as_str) {
                    *self.webhook_secret.lock().unwrap() = Some(s.to_string());
                }
                let result = match b.get("url").and_then(Value::as_str) {
                    Some(url) => self.deliver(url, &event, auth).await.map(|d| vec![(url.to_string(), d)]),
                    None => self.deliver_to_registered(&event, auth).await,
                };
                deliveries_answer(result)
            }
            _ => Answer::json(404, json!({"message": "unknown control call"})),
        }
    }

    fn api(&self, call: &Recorded) -> Answer {
        if core::query_param(call.query.as_deref(), "api_key") != Some(self.core.api_key.as_str()) {
            return Answer::json(401, json!({"message": "Invalid API Key"}));
        }
        let Some(rest) = call.path.strip_prefix(PREFIX) else { return not_found() };
        let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let body = call.json();
        let mut st = self.state.lock().unwrap();
        let campaign_id = |s: &str| s.parse::<i64>().ok();
        match (call.method.as_str(), segs.as_slice()) {
            ("GET", ["campaigns"]) => Answer::json(200, Value::Array(st.campaigns.values().map(campaign_json).collect())),
            ("POST", ["campaigns", "create"]) => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or("Untitled Campaign").to_string();
                let client_id = body.get("client_id").and_then(Value::as_i64);
                let id = st.id();
                let now = now_iso();
                st.campaigns.insert(id, Campaign { id, name: name.clone(), client_id, status: "DRAFTED".into(), created_at: now.clone(), updated_at: now.clone(), sequences: vec![], leads: vec![] });
                Answer::json(200, json!({"ok": true, "id": id, "name": name, "created_at": now}))
            }
            ("GET", ["campaigns", id]) => match campaign_id(id).and_then(|id| st.campaigns.get(&id)) {
                Some(c) => Answer::json(200, campaign_json(c)),
                None => not_found(),
            },
            ("POST", ["campaigns", id, "status"]) => {
                let Some(c) = campaign_id(id).and_then(|id| st.campaigns.get_mut(&id)) else { return not_found() };
                let next = match body.get("status").and_then(Value::as_str) {
                    Some("START") => "ACTIVE",
                    Some("PAUSED") => "PAUSED",
                    Some("STOPPED") => "STOPPED",
                    _ => return bad("status must be one of START, PAUSED, STOPPED"),
                };
                if c.status == "STOPPED" {
                    return bad("a STOPPED campaign cannot be started or paused again");
                }
                c.status = next.into();
                c.updated_at = now_iso();
                Answer::json(200, json!({"ok": true}))
            }
            ("GET", ["campaigns", id, "sequences"]) => match campaign_id(id).and_then(|id| st.campaigns.get(&id)) {
                Some(c) => Answer::json(200, Value::Array(c.sequences.clone())),
                None => not_found(),
            },
            ("POST", ["campaigns", id, "sequences"]) => {
                let Some(cid) = campaign_id(id).filter(|id| st.campaigns.contains_key(id)) else { return not_found() };
                if st.campaigns[&cid].status == "ACTIVE" {
                    return bad("the sequence of an ACTIVE campaign cannot be changed: pause it first");
                }
                let Some(steps) = body.get("sequences").and_then(Value::as_array) else { return bad("sequences must be an array") };
                let mut saved = vec![];
                for step in steps {
                    let ok = step.get("seq_number").and_then(Value::as_i64).is_some()
                        && step.pointer("/seq_delay_details/delay_in_days").and_then(Value::as_i64).is_some();
                    if !ok {
                        return bad("each sequence needs seq_number and seq_delay_details.delay_in_days");
                    }
                    let mut s = step.clone();
                    if s.get("id").is_none_or(Value::is_null) {
                        s["id"] = json!(st.id());
                    }
                    saved.push(s);
                }
                let c = st.campaigns.get_mut(&cid).unwrap();
                c.sequences = saved;
                c.updated_at = now_iso();
                Answer::json(200, json!({"ok": true, "data": "Sequences updated"}))
            }
            ("GET", ["campaigns", id, "leads"]) => {
                let Some(c) = campaign_id(id).and_then(|id| st.campaigns.get(&id)) else { return not_found() };
                let offset = query_num(call, "offset").unwrap_or(0);
                let limit = query_num(call, "limit").unwrap_or(100);
                if limit > 100 {
                    return bad("limit must be at most 100");
                }
                let data: Vec<Value> = c.leads.iter().skip(offset).take(limit).map(lead_json).collect();
                Answer::json(200, json!({"total_leads": c.leads.len(), "offset": offset, "limit": limit, "data": data}))
            }
            ("POST", ["campaigns", id, "leads"]) => {
                let Some(cid) = campaign_id(id).filter(|id| st.campaigns.contains_key(id)) else { return not_found() };
                let Some(list) = body.get("lead_list").and_then(Value::as_array) else { return bad("lead_list must be an array") };
                if list.len() > MAX_LEADS_PER_CALL {
                    return bad("lead_list can hold at most 400 leads");
                }
                add_leads(&mut st, cid, list)
            }
            ("POST", ["campaigns", id, "leads", lead, action @ ("pause" | "resume" | "unsubscribe")]) => {
                let (Some(cid), Ok(lid)) = (campaign_id(id), lead.parse::<i64>()) else { return not_found() };
                let Some(l) = st.campaigns.get_mut(&cid).and_then(|c| c.leads.iter_mut().find(|l| l.id == lid)) else { return not_found() };
                match *action {
                    "pause" => l.status = "PAUSED".into(),
                    "resume" => l.status = "INPROGRESS".into(),
                    _ => l.unsubscribed = true,
                }
                Answer::json(200, json!({"ok": true, "data": format!("lead {action}d")}))
            }
            ("GET", ["campaigns", id, "leads", lead, "message-history"]) => {
                let (Some(cid), Ok(lid)) = (campaign_id(id), lead.parse::<i64>()) else { return not_found() };
                match st.lead(cid, lid) {
                    Some(_) => Answer::json(200, json!({"history": [], "from": "", "to": ""})),
                    None => not_found(),
                }
            }
            ("POST", ["leads", lead, "unsubscribe"]) => {
                let Ok(lid) = lead.parse::<i64>() else { return not_found() };
                let Some(email) = st.lead_ids.iter().find(|(_, id)| **id == lid).map(|(e, _)| e.clone()) else { return not_found() };
                for c in st.campaigns.values_mut() {
                    c.leads.iter_mut().filter(|l| l.id == lid).for_each(|l| l.unsubscribed = true);
                }
                st.global_unsubscribes.push(email);
                Answer::json(200, json!({"ok": true}))
            }
            ("GET", ["leads"]) => {
                let query = call.query.as_deref().unwrap_or_default().as_bytes();
                let email = form_urlencoded::parse(query).find(|(k, _)| k == "email").map(|(_, v)| v.to_lowercase()).unwrap_or_default();
                let found = st.campaigns.values().flat_map(|c| &c.leads).find(|l| l.email == email);
                Answer::json(200, found.map(|l| lead_json(l)["lead"].clone()).unwrap_or_else(|| json!({})))
            }
            ("GET", ["email-accounts"]) => Answer::json(
                200,
                Value::Array(
                    st.email_accounts
                        .iter()
                        .skip(query_num(call, "offset").unwrap_or(0))
                        .take(query_num(call, "limit").unwrap_or(100))
                        .map(|a| json!({"id": a.id, "from_name": a.from_name, "from_email": a.from_email, "username": a.from_email,
                                         "type": "SMTP", "is_smtp_success": true, "is_imap_success": true, "message_per_day": 40,
                                         "daily_sent_count": 0}))
                        .collect(),
                ),
            ),
            ("POST", ["webhook", "create"]) => {
                let url = body.get("webhook_url").and_then(Value::as_str);
                let assoc = body.get("association_type").and_then(Value::as_str);
                let (Some(url), Some(assoc @ ("user" | "client" | "campaign"))) = (url, assoc) else {
                    return bad("webhook_url and association_type (user, client or campaign) are required");
                };
                let Some(map @ Value::Object(_)) = body.get("event_type_map") else { return bad("event_type_map is required") };
                let campaign = body.get("email_campaign_id").and_then(Value::as_i64);
                if assoc == "campaign" && !campaign.is_some_and(|c| st.campaigns.contains_key(&c)) {
                    return bad("email_campaign_id must name a campaign");
                }
                let id = st.id();
                let hook = Webhook {
                    id,
                    webhook_url: url.into(),
                    association_type: assoc.into(),
                    email_campaign_id: campaign,
                    event_type_map: map.clone(),
                    name: body.get("name").and_then(Value::as_str).map(str::to_string),
                };
                st.webhooks.push(hook);
                Answer::json(200, json!({"ok": true, "id": id}))
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

fn add_leads(st: &mut State, cid: i64, list: &[Value]) -> Answer {
    let (mut added, mut already, mut dup, mut invalid, mut unsub) = (0, 0, 0, vec![], vec![]);
    let mut seen = std::collections::HashSet::new();
    for lead in list {
        let email = lead.get("email").and_then(Value::as_str).unwrap_or_default().trim().to_lowercase();
        if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            invalid.push(json!(email));
            continue;
        }
        if !seen.insert(email.clone()) {
            dup += 1;
            continue;
        }
        if st.campaigns[&cid].leads.iter().any(|l| l.email == email) {
            already += 1;
            continue;
        }
        if st.global_unsubscribes.contains(&email) {
            unsub.push(json!(email));
            continue;
        }
        let id = match st.lead_ids.get(&email) {
            Some(id) => *id,
            None => {
                let id = st.id();
                st.lead_ids.insert(email.clone(), id);
                id
            }
        };
        let map_id = st.id();
        st.campaigns.get_mut(&cid).unwrap().leads.push(Lead {
            id,
            campaign_lead_map_id: map_id,
            email,
            fields: lead.clone(),
            status: "STARTED".into(),
            unsubscribed: false,
        });
        added += 1;
    }
    let skipped = list.len() - added;
    Answer::json(
        200,
        json!({
            "ok": true, "upload_count": added, "total_leads": list.len(), "already_added_to_campaign": already,
            "duplicate_count": dup, "invalid_email_count": invalid.len(), "invalid_emails": invalid,
            "unsubscribed_leads": unsub, "block_count": 0, "is_lead_limit_exhausted": false,
            "added_count": added, "skipped_count": skipped,
        }),
    )
}

fn query_num(call: &Recorded, name: &str) -> Option<usize> {
    call.query_param(name)?.parse().ok()
}

fn campaign_json(c: &Campaign) -> Value {
    json!({
        "id": c.id, "user_id": 1, "name": c.name, "status": c.status, "client_id": c.client_id,
        "created_at": c.created_at, "updated_at": c.updated_at, "track_settings": [], "scheduler_cron_value": null,
        "min_time_btwn_emails": 10, "max_leads_per_day": 100, "stop_lead_settings": "REPLY_TO_AN_EMAIL",
        "send_as_plain_text": false, "follow_up_percentage": 100,
    })
}

fn lead_json(l: &Lead) -> Value {
    let f = |k: &str| l.fields.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "campaign_lead_map_id": l.campaign_lead_map_id, "status": l.status, "created_at": now_iso(),
        "lead": {
            "id": l.id, "email": l.email, "first_name": f("first_name"), "last_name": f("last_name"),
            "company_name": f("company_name"), "custom_fields": f("custom_fields"), "is_unsubscribed": l.unsubscribed,
        },
    })
}

/// The state as the control API shows it.
fn state_json(st: &State) -> Value {
    json!({
        "campaigns": st.campaigns.values().map(|c| {
            let mut v = campaign_json(c);
            v["sequences"] = Value::Array(c.sequences.clone());
            v["leads"] = Value::Array(c.leads.iter().map(lead_json).collect());
            v
        }).collect::<Vec<_>>(),
        "webhooks": st.webhooks.iter().map(|w| json!({
            "id": w.id, "webhook_url": w.webhook_url, "association_type": w.association_type,
            "email_campaign_id": w.email_campaign_id, "event_type_map": w.event_type_map, "name": w.name,
        })).collect::<Vec<_>>(),
        "email_accounts": st.email_accounts.iter().map(|a| json!({"id": a.id, "from_name": a.from_name, "from_email": a.from_email})).collect::<Vec<_>>(),
    })
}

pub(crate) fn calls_json(calls: &[Recorded]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| json!({"method": c.method, "path": c.path, "query": c.query, "body": c.json()}))
            .collect(),
    )
}

pub(crate) fn deliveries_answer(result: Result<Vec<(String, Delivered)>, Error>) -> Answer {
    match result {
        Ok(list) if list.is_empty() => Answer::json(409, json!({"message": "no webhook is registered for this event: give \"url\""})),
        Ok(list) => Answer::json(
            200,
            json!({"deliveries": list.iter().map(|(url, d)| json!({"url": url, "status": d.status, "answer": d.body})).collect::<Vec<_>>()}),
        ),
        Err(e) => Answer::json(502, json!({"message": e.to_string()})),
    }
}

fn bad(message: &str) -> Answer {
    Answer::json(400, json!({"message": message}))
}

fn not_found() -> Answer {
    Answer::json(404, json!({"message": "Not Found"}))
}
