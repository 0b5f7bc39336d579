//! What the provider adapter plugins share (docs/providers.md, "Authors: the adapter
//! contract"). An adapter implements [`Adapter`] (its provider's calls and its webhook
//! vocabulary) and exports [`handle`]; everything about the gateway's side lives here:
//!
//! - [`job`]: `POST /provider/{op}`: validates the job, runs the op through the adapter, writes
//!   provider ids and `sync_status`, and turns the provider's answer into the job's outcome
//!   (2xx done; 429 rescheduled with `retry-after`; 5xx and connect errors retried; other 4xx
//!   recorded as `PROVIDER_REJECTED` and done).
//! - [`events`]: `POST /webhooks/{provider}`: the normalised event written once per event key
//!   (activity, messages, lead status; for a reply the CRM event first).
//! - [`api`]: provider calls over `outbound-http`, never carrying the credential (the host
//!   injects it).
//! - [`store`], [`crm`]: the tenant-db reads and writes; [`text`]: pure parsing helpers.

pub mod api;
pub mod crm;
pub mod events;
pub mod job;
pub mod store;
pub mod text;

use gateway_plugin_sdk::serde_json::Value as J;
use gateway_plugin_sdk::{self as sdk, HandlerError, Request, Response};

pub use api::{Api, CallError};
pub use events::{Event, Message, Normalised};

/// A campaign status the adapter sets at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Paused,
    Stopped,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "paused" => Some(Status::Paused),
            "stopped" => Some(Status::Stopped),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// A per-lead action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadAction {
    Pause,
    Resume,
    Unsubscribe,
}

impl LeadAction {
    pub fn parse(s: &str) -> Option<LeadAction> {
        match s {
            "pause" => Some(LeadAction::Pause),
            "resume" => Some(LeadAction::Resume),
            "unsubscribe" => Some(LeadAction::Unsubscribe),
            _ => None,
        }
    }
}

/// A local campaign (`campaigns`).
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub channel: String,
    pub status: String,
    pub provider_id: Option<String>,
    pub sync_status: String,
}

/// A local lead (`campaign_leads`).
#[derive(Debug, Clone, Default)]
pub struct Lead {
    pub id: String,
    pub identity: String,
    pub email: Option<String>,
    pub profile_url: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub custom_fields: J,
    pub provider_id: Option<String>,
    pub status: String,
    pub sync_status: String,
}

/// A lead on its way to the provider, with the sending account it is paired with (HeyReach
/// pairs each lead with a LinkedIn sender; Smartlead has none).
pub struct Pair<'a> {
    pub lead: &'a Lead,
    pub sender: Option<&'a str>,
}

/// A sending account at the provider (`inboxes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbox {
    pub provider_id: String,
    pub address: Option<String>,
    pub name: Option<String>,
    pub status: Option<String>,
}

/// One step of a sequence snapshot (`campaign_sequences.steps`).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub subject: String,
    pub body: String,
    pub delay_days: i64,
}

/// A provider: its calls and its webhook vocabulary. Every call goes through [`Api`], whose
/// answers are already classified: a method only says what to send and what to read back.
pub trait Adapter {
    /// The provider's name in the policies (`[providers.<name>]`) and in `campaigns.provider`.
    const NAME: &'static str;
    /// The capability it serves (`provisioning.capability`).
    const CAPABILITY: &'static str;
    /// Leads per add-leads call at most.
    const LEAD_BATCH: usize;
    /// Whether each lead must be paired with a sending account (an `inboxes` row).
    const NEEDS_SENDER: bool;
    /// When the provider's public API cannot change a sequence: why (recorded as
    /// `PROVIDER_UNSUPPORTED`).
    const SEQUENCE_UNSUPPORTED: Option<&'static str> = None;

    /// Checks the credential works.
    fn check_key(api: &Api) -> Result<(), CallError>;
    /// Registers the gateway's webhook URL for the events [`Adapter::normalise`] keeps; the
    /// provider's id(s) for it.
    fn register_webhook(api: &Api, url: &str) -> Result<String, CallError>;
    /// Every sending account.
    fn list_inboxes(api: &Api) -> Result<Vec<Inbox>, CallError>;
    /// Creates a campaign; its provider id.
    fn create_campaign(api: &Api, name: &str) -> Result<String, CallError>;
    /// For a provider whose campaigns are made elsewhere: the id of the one named `name`.
    fn find_campaign(_api: &Api, _name: &str) -> Result<Option<String>, CallError> {
        Ok(None)
    }
    /// Sets the campaign's status; a note for the answer when the provider cannot do exactly that.
    fn set_status(api: &Api, campaign: &str, status: Status) -> Result<Option<&'static str>, CallError>;
    /// Replaces the campaign's sequence (`active`: it is running at the provider now).
    fn put_sequence(api: &Api, campaign: &str, active: bool, steps: &[Step]) -> Result<(), CallError>;
    /// Adds one batch (at most [`Adapter::LEAD_BATCH`]); each lead's provider id when known.
    fn add_leads(api: &Api, campaign: &str, leads: &[Pair<'_>]) -> Result<Vec<Option<String>>, CallError>;
    /// Applies a lead action; the lead's provider id when it was looked up.
    fn lead_action(api: &Api, campaign: &str, lead: &Lead, action: LeadAction) -> Result<Option<String>, CallError>;
    /// The event a webhook body describes, in the gateway's vocabulary.
    fn normalise(body: &J) -> Result<Normalised, String>;
}

/// The adapter's entry point: sync jobs (`/provider/{op}`) and webhook events
/// (`/webhooks/{provider}`), both `POST`. The host calls those exact paths; a prefix before
/// them is allowed, so that a test policy can expose an adapter on a route of its own.
pub fn handle<A: Adapter>(req: Request) -> Result<Response, HandlerError> {
    if req.method != "POST" {
        return Err(sdk::not_found());
    }
    if let Some((_, op)) = req.path.rsplit_once("/provider/") {
        return job::run::<A>(op, &req);
    }
    match req.path.rsplit_once("/webhooks/") {
        Some((_, p)) if p == A::NAME => events::run::<A>(&req),
        _ => Err(sdk::not_found()),
    }
}
