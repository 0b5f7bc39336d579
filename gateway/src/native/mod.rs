//! Native handlers: routes the gateway answers itself. A policy names them as
//! `target = "native:<name>"`; [`NAMES`] is the list policies are checked against.

mod admin;
mod businesses;
mod plugins;
mod webhooks;
mod whoami;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{ApiError, Code};
use crate::phases::{Call, Reply};

pub const NAMES: &[&str] = &[
    "whoami",
    "create_org",
    "update_org",
    "create_token",
    "revoke_token",
    "create_business",
    "add_business_member",
    "upload_plugin",
    "activate_plugin",
    "rollback_plugin",
    "list_plugins",
    "create_webhook_endpoint",
    "list_webhook_endpoints",
    "rotate_webhook_endpoint",
    "disable_webhook_endpoint",
    "webhook_ingress",
    "list_webhook_events",
    "get_webhook_event",
    "replay_webhook_event",
];

pub async fn call(name: &str, call: Call<'_>) -> Result<Reply, ApiError> {
    match name {
        "whoami" => whoami::whoami(call).await,
        "create_org" => admin::create_org(call).await,
        "update_org" => admin::update_org(call).await,
        "create_token" => admin::create_token(call).await,
        "revoke_token" => admin::revoke_token(call).await,
        "create_business" => businesses::create(call).await,
        "add_business_member" => businesses::add_member(call).await,
        "upload_plugin" => plugins::upload(call).await,
        "activate_plugin" => plugins::activate(call).await,
        "rollback_plugin" => plugins::rollback(call).await,
        "list_plugins" => plugins::list(call).await,
        "create_webhook_endpoint" => webhooks::create_endpoint(call).await,
        "list_webhook_endpoints" => webhooks::list_endpoints(call).await,
        "rotate_webhook_endpoint" => webhooks::rotate_endpoint(call).await,
        "disable_webhook_endpoint" => webhooks::disable_endpoint(call).await,
        "webhook_ingress" => webhooks::ingress(call).await,
        "list_webhook_events" => webhooks::list_events(call).await,
        "get_webhook_event" => webhooks::get_event(call).await,
        "replay_webhook_event" => webhooks::replay_event(call).await,
        other => Err(ApiError::new(Code::Internal, format!("no native handler {other:?}"))),
    }
}

/// The JSON body as an object (400 VALIDATION_FAILED otherwise).
fn object<'a>(call: &'a Call<'_>) -> Result<&'a Map<String, Value>, ApiError> {
    match &call.json {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::invalid("body", "must be a JSON object")),
    }
}

fn string_field<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

fn required_string<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a str, ApiError> {
    string_field(m, field)?.ok_or_else(|| ApiError::invalid(field, "is required"))
}

/// A UUID path parameter; anything else is a resource that cannot exist (404).
fn uuid_param(call: &Call<'_>, name: &str) -> Result<Uuid, ApiError> {
    call.param(name).and_then(|v| Uuid::parse_str(v).ok()).ok_or_else(ApiError::not_found)
}
