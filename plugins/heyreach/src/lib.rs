//! `heyreach`: the LinkedIn-outreach adapter over HeyReach's public API (docs/providers.md).
//!
//! HeyReach authenticates with an `X-API-KEY` header; the host adds it (the route's
//! `credentials` grant, `inject = "header:X-API-KEY"`). Its API is RPC style (almost all POST)
//! and narrower than Smartlead's, which the contract absorbs so:
//!
//! - Campaigns cannot be created over the public API: `create_campaign` links the HeyReach
//!   campaign with the same name (`campaign/GetAllCampaigns`), or records
//!   `PROVIDER_UNSUPPORTED`; later jobs for the campaign look the name up again.
//! - Status: active is `campaign/Resume`, paused `campaign/Pause`; HeyReach has no stop, so
//!   stopped pauses it there and it stays stopped here (the answer says so).
//! - Sequences are not editable over the public API: `put_sequence` records
//!   `PROVIDER_UNSUPPORTED` on the version.
//! - Leads: `campaign/AddLeadsToCampaignV2`, 100 per call, each paired with a LinkedIn sender
//!   (an `inboxes` row, round robin). HeyReach identifies a lead by its profile URL, which
//!   becomes the lead's `provider_id`. Unsubscribe is `campaign/StopLeadInCampaign`; per-lead
//!   pause and resume do not exist there (`PROVIDER_UNSUPPORTED`).
//! - Webhooks: one `webhooks/CreateWebhook` per event type; HeyReach does not sign them, so the
//!   registered URL carries the endpoint's secret token (`url-token` scheme).

use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};
use outreach::text::{self, first, id_json, id_text};
use outreach::{Adapter, Api, CallError, Event, Inbox, Lead, LeadAction, Message, Normalised, Pair, Status, Step};

struct HeyReach;

impl sdk::Guest for HeyReach {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        outreach::handle::<HeyReach>(req)
    }
}

sdk::export_plugin!(HeyReach);

/// The events registered (one webhook each), each normalised by [`normalise`].
const EVENTS: &[&str] = &[
    "MESSAGE_SENT",
    "INMAIL_SENT",
    "MESSAGE_REPLY_RECEIVED",
    "INMAIL_REPLY_RECEIVED",
    "CONNECTION_REQUEST_ACCEPTED",
    "LEAD_TAG_UPDATED",
    "CAMPAIGN_COMPLETED",
];

/// Pages read at most (100 items each) when listing accounts or looking a campaign up.
const MAX_PAGES: usize = 20;

const NO_STOP: &str = "HeyReach has no stop: the campaign is paused at HeyReach and stopped here";

fn items(answer: &J) -> Vec<J> {
    answer
        .pointer("/items")
        .or_else(|| answer.pointer("/data"))
        .and_then(J::as_array)
        .or_else(|| answer.as_array())
        .cloned()
        .unwrap_or_default()
}

/// A lead as `accountLeadPairs` takes it.
fn pair_json(p: &Pair<'_>) -> J {
    let l = p.lead;
    let custom: Vec<J> = l
        .custom_fields
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| json!({"name": k, "value": v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "linkedInAccountId": p.sender.map(id_json),
        "lead": {
            "firstName": l.first_name, "lastName": l.last_name, "profileUrl": l.profile_url,
            "companyName": l.company, "emailAddress": l.email, "customUserFields": custom,
        },
    })
}

fn campaign_call(api: &Api, call: &str, campaign: &str) -> Result<J, CallError> {
    api.post(&format!("/campaign/{call}"), &[("campaignId", campaign)], &json!({"campaignId": id_json(campaign)}))
}

impl Adapter for HeyReach {
    const NAME: &'static str = "heyreach";
    const CAPABILITY: &'static str = "linkedin_outreach";
    const LEAD_BATCH: usize = 100;
    const NEEDS_SENDER: bool = true;
    const SEQUENCE_UNSUPPORTED: Option<&'static str> =
        Some("HeyReach's public API cannot edit a campaign's sequence; edit it in HeyReach");

    fn check_key(api: &Api) -> Result<(), CallError> {
        api.get("/auth/CheckApiKey", &[]).map(drop)
    }

    fn register_webhook(api: &Api, url: &str) -> Result<String, CallError> {
        let mut ids = Vec::new();
        for event in EVENTS {
            let answer = api.post(
                "/webhooks/CreateWebhook",
                &[],
                &json!({"webhookName": format!("gateway {event}"), "webhookUrl": url, "eventType": event, "campaignIds": []}),
            )?;
            ids.push(id_text(first(&answer, &["/id", "/webhookId", "/data/id"])).unwrap_or_else(|| event.to_string()));
        }
        Ok(text::cut(&ids.join(","), 200))
    }

    fn list_inboxes(api: &Api) -> Result<Vec<Inbox>, CallError> {
        let mut out = Vec::new();
        for page in 0..MAX_PAGES {
            let answer = api.post("/li_account/GetAll", &[], &json!({"offset": page * 100, "limit": 100}))?;
            let items = items(&answer);
            out.extend(items.iter().filter_map(inbox));
            if items.len() < 100 {
                break;
            }
        }
        Ok(out)
    }

    fn create_campaign(_api: &Api, _name: &str) -> Result<String, CallError> {
        // Reached only when `find_campaign` found none.
        Err(CallError::unsupported("HeyReach's public API cannot create campaigns; create one with this exact name in HeyReach"))
    }

    fn find_campaign(api: &Api, name: &str) -> Result<Option<String>, CallError> {
        for page in 0..MAX_PAGES {
            let answer = api.post("/campaign/GetAllCampaigns", &[], &json!({"offset": page * 100, "limit": 100, "keyword": name}))?;
            let items = items(&answer);
            if let Some(c) = items.iter().find(|c| c.get("name").and_then(J::as_str).map(str::trim) == Some(name.trim())) {
                return Ok(id_text(c.get("id")));
            }
            if items.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    fn set_status(api: &Api, campaign: &str, status: Status) -> Result<Option<&'static str>, CallError> {
        match status {
            Status::Active => campaign_call(api, "Resume", campaign).map(|_| None),
            Status::Paused => campaign_call(api, "Pause", campaign).map(|_| None),
            Status::Stopped => campaign_call(api, "Pause", campaign).map(|_| Some(NO_STOP)),
        }
    }

    fn put_sequence(_api: &Api, _campaign: &str, _active: bool, _steps: &[Step]) -> Result<(), CallError> {
        // Never called: SEQUENCE_UNSUPPORTED answers first.
        Err(CallError::unsupported(Self::SEQUENCE_UNSUPPORTED.unwrap_or_default()))
    }

    fn add_leads(api: &Api, campaign: &str, leads: &[Pair<'_>]) -> Result<Vec<Option<String>>, CallError> {
        let pairs: Vec<J> = leads.iter().map(pair_json).collect();
        api.post("/campaign/AddLeadsToCampaignV2", &[], &json!({"campaignId": id_json(campaign), "accountLeadPairs": pairs}))?;
        Ok(leads.iter().map(|p| p.lead.profile_url.clone()).collect())
    }

    fn lead_action(api: &Api, campaign: &str, lead: &Lead, action: LeadAction) -> Result<Option<String>, CallError> {
        match action {
            LeadAction::Unsubscribe => {
                api.post(
                    "/campaign/StopLeadInCampaign",
                    &[],
                    &json!({"campaignId": id_json(campaign), "leadMemberId": null, "leadUrl": lead.profile_url}),
                )?;
                Ok(None)
            }
            LeadAction::Pause | LeadAction::Resume => {
                Err(CallError::unsupported("HeyReach's public API cannot pause or resume one lead; unsubscribe stops it"))
            }
        }
    }

    fn normalise(body: &J) -> Result<Normalised, String> {
        Ok(normalise(body))
    }
}

fn inbox(a: &J) -> Option<Inbox> {
    let status = if a.get("isActive") == Some(&J::Bool(false)) {
        "inactive"
    } else if a.get("authIsValid") == Some(&J::Bool(false)) {
        "auth_invalid"
    } else {
        "active"
    };
    let name = [text::text(a.get("firstName")), text::text(a.get("lastName"))].into_iter().flatten().collect::<Vec<_>>().join(" ");
    Some(Inbox {
        provider_id: id_text(a.get("id"))?,
        address: text::text(first(a, &["/emailAddress", "/profileUrl"])),
        name: (!name.is_empty()).then_some(name).or_else(|| text::text(a.get("name"))),
        status: Some(status.into()),
    })
}

fn kind(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "MESSAGE_REPLY_RECEIVED" | "INMAIL_REPLY_RECEIVED" | "EVERY_MESSAGE_REPLY_RECEIVED" => "reply.received",
        "MESSAGE_SENT" | "INMAIL_SENT" => "message.sent",
        "CONNECTION_REQUEST_ACCEPTED" => "connection.accepted",
        "LEAD_TAG_UPDATED" => "lead.category_changed",
        "CAMPAIGN_COMPLETED" => "campaign.status_changed",
        _ => return None,
    })
}

/// A HeyReach webhook body in the gateway's vocabulary.
pub fn normalise(body: &J) -> Normalised {
    let Some(event_type) = text::text(first(body, &["/eventType", "/event_type", "/type", "/event"])) else {
        return Normalised::Ignored("no event type");
    };
    let Some(kind) = kind(&event_type.trim().to_ascii_uppercase()) else {
        return Normalised::Ignored("event type not normalised");
    };
    let Some(campaign) = id_text(first(body, &["/campaign/id", "/campaignId", "/campaign_id"])) else {
        return Normalised::Ignored("no campaign id");
    };
    let profile = text::text(first(body, &["/leadProfile/linkedInUrl", "/leadProfile/profileUrl", "/lead/profileUrl", "/lead/linkedInUrl"]));
    let email = text::text(first(body, &["/leadProfile/emailAddress", "/lead/emailAddress", "/leadProfile/email"])).and_then(|e| text::email(&e));
    let name = [text::text(first(body, &["/leadProfile/firstName", "/lead/firstName"])), text::text(first(body, &["/leadProfile/lastName", "/lead/lastName"]))]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let message = match kind {
        "reply.received" | "message.sent" => Some(Message {
            direction: if kind == "reply.received" { "inbound" } else { "outbound" },
            subject: text::text(first(body, &["/message/subject", "/subject"])),
            body: text::text(first(body, &["/message/text", "/message/body", "/messageText"])),
            provider_message_id: id_text(first(body, &["/message/id", "/messageId"])),
        }),
        _ => None,
    };
    let category = (kind == "lead.category_changed")
        .then(|| {
            first(body, &["/tags", "/leadProfile/tags", "/lead/tags", "/tag"]).and_then(|t| match t {
                J::Array(a) => Some(a.iter().filter_map(|x| x.as_str().or_else(|| x.get("name")?.as_str())).collect::<Vec<_>>().join(", ")),
                J::String(s) => Some(s.clone()),
                _ => None,
            })
        })
        .flatten()
        .filter(|c| !c.is_empty());
    Normalised::Event(Event {
        kind,
        campaign,
        lead_provider_id: None,
        lead_identities: profile.as_deref().map(text::profile_url_forms).unwrap_or_default(),
        lead_email: email,
        lead_profile_url: profile,
        lead_name: (!name.is_empty()).then_some(name),
        seq_number: None,
        message,
        occurred_at: text::text(first(body, &["/timestamp", "/createdAt", "/eventTime"])).and_then(|t| text::timestamp(&t)),
        category,
        campaign_status: (kind == "campaign.status_changed").then_some("completed"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: J) -> Event {
        match normalise(&body) {
            Normalised::Event(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply() {
        let e = event(json!({
            "eventType": "MESSAGE_REPLY_RECEIVED",
            "leadProfile": {"linkedInUrl": "https://www.linkedin.com/in/ann/", "emailAddress": "Ann@X.io", "firstName": "Ann", "lastName": "Lee"},
            "campaign": {"id": 314, "name": "Q3"},
            "message": {"id": 99, "text": "Happy to chat"},
            "timestamp": "2024-05-01T10:00:00.000Z",
        }));
        assert_eq!((e.kind, e.campaign.as_str()), ("reply.received", "314"));
        assert_eq!(e.lead_identities, ["https://www.linkedin.com/in/ann/", "https://www.linkedin.com/in/ann"]);
        assert_eq!((e.lead_email.as_deref(), e.lead_name.as_deref()), (Some("ann@x.io"), Some("Ann Lee")));
        let m = e.message.unwrap();
        assert_eq!((m.direction, m.body.as_deref(), m.provider_message_id.as_deref()), ("inbound", Some("Happy to chat"), Some("99")));
        assert_eq!(e.occurred_at.as_deref(), Some("2024-05-01T10:00:00.000Z"));
    }

    #[test]
    fn every_kind_is_recognised() {
        for (t, k) in [
            ("INMAIL_REPLY_RECEIVED", "reply.received"),
            ("MESSAGE_SENT", "message.sent"),
            ("INMAIL_SENT", "message.sent"),
            ("connection_request_accepted", "connection.accepted"),
            ("LEAD_TAG_UPDATED", "lead.category_changed"),
            ("CAMPAIGN_COMPLETED", "campaign.status_changed"),
        ] {
            assert_eq!(event(json!({"eventType": t, "campaign": {"id": 1}})).kind, k, "{t}");
            assert!(outreach::events::KINDS.contains(&k));
        }
        assert_eq!(event(json!({"eventType": "CAMPAIGN_COMPLETED", "campaign": {"id": 1}})).campaign_status, Some("completed"));
        assert_eq!(event(json!({"eventType": "LEAD_TAG_UPDATED", "campaignId": 1, "tags": ["hot", "vip"]})).category.as_deref(), Some("hot, vip"));
        assert_eq!(normalise(&json!({"eventType": "CONNECTION_REQUEST_SENT", "campaign": {"id": 1}})), Normalised::Ignored("event type not normalised"));
        assert_eq!(normalise(&json!({"eventType": "MESSAGE_SENT"})), Normalised::Ignored("no campaign id"));
    }

    #[test]
    fn leads_are_paired_with_senders() {
        let l = Lead {
            profile_url: Some("https://linkedin.com/in/b".into()),
            first_name: Some("B".into()),
            custom_fields: json!({"tier": "gold", "size": 10}),
            ..Default::default()
        };
        let j = pair_json(&Pair { lead: &l, sender: Some("12") });
        assert_eq!(j["linkedInAccountId"], json!(12));
        assert_eq!(j["lead"]["profileUrl"], "https://linkedin.com/in/b");
        assert_eq!(j["lead"]["customUserFields"], json!([{"name": "size", "value": "10"}, {"name": "tier", "value": "gold"}]));
    }

    #[test]
    fn accounts_become_inboxes() {
        let a = inbox(&json!({"id": 7, "emailAddress": "s@x.io", "firstName": "Sam", "lastName": "Ro", "isActive": true, "authIsValid": false})).unwrap();
        assert_eq!(a, Inbox { provider_id: "7".into(), address: Some("s@x.io".into()), name: Some("Sam Ro".into()), status: Some("auth_invalid".into()) });
        assert_eq!(items(&json!({"totalCount": 1, "items": [{"id": 1}]})).len(), 1);
        assert_eq!(items(&json!([{"id": 1}, {"id": 2}])).len(), 2);
    }
}
