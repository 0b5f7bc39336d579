//! Native handlers: routes the gateway answers itself. A policy names them as
//! `target = "native:<name>"`; the names resolve to a [`Native`] when policies load.

mod admin;
mod agent_runs;
mod businesses;
mod campaigns;
mod openapi;
mod optimizations;
mod plugins;
mod provisioning;
mod providers;
mod schedules;
mod settings;
pub(crate) mod webhooks;
mod whoami;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::phases::{Call, Reply};
use crate::policy::Native;

/// Runs a native handler. The match is exhaustive: a handler policies can name but this
/// does not serve does not compile.
pub async fn call(handler: Native, call: Call<'_>) -> Result<Reply, ApiError> {
    match handler {
        Native::Whoami => whoami::whoami(call).await,
        Native::CreateOrg => admin::create_org(call).await,
        Native::UpdateOrg => admin::update_org(call).await,
        Native::CreateToken => admin::create_token(call).await,
        Native::RevokeToken => admin::revoke_token(call).await,
        Native::CreateBusiness => businesses::create(call).await,
        Native::AddBusinessMember => businesses::add_member(call).await,
        Native::UploadPlugin => plugins::upload(call).await,
        Native::ActivatePlugin => plugins::activate(call).await,
        Native::RollbackPlugin => plugins::rollback(call).await,
        Native::ListPlugins => plugins::list(call).await,
        Native::PluginFailures => plugins::failures(call).await,
        Native::DeactivatePlugin => plugins::deactivate(call).await,
        Native::CreateWebhookEndpoint => webhooks::create_endpoint(call).await,
        Native::ListWebhookEndpoints => webhooks::list_endpoints(call).await,
        Native::RotateWebhookEndpoint => webhooks::rotate_endpoint(call).await,
        Native::DisableWebhookEndpoint => webhooks::disable_endpoint(call).await,
        Native::WebhookIngress => webhooks::ingress(call).await,
        Native::ListWebhookEvents => webhooks::list_events(call).await,
        Native::GetWebhookEvent => webhooks::get_event(call).await,
        Native::ReplayWebhookEvent => webhooks::replay_event(call).await,
        Native::ListInboxes => campaigns::list_inboxes(call).await,
        Native::CreateCampaign => campaigns::create(call).await,
        Native::ListCampaigns => campaigns::list(call).await,
        Native::GetCampaign => campaigns::get(call).await,
        Native::SetCampaignStatus => campaigns::set_status(call).await,
        Native::GetCampaignSequence => campaigns::get_sequence(call).await,
        Native::SaveCampaignSequence => campaigns::save_sequence(call).await,
        Native::AddCampaignLeads => campaigns::add_leads(call).await,
        Native::ListCampaignLeads => campaigns::list_leads(call).await,
        Native::CampaignLeadAction => campaigns::lead_action(call).await,
        Native::ListCampaignReplies => campaigns::replies(call).await,
        Native::ListLeadMessages => campaigns::lead_messages(call).await,
        Native::CampaignAnalytics => campaigns::analytics(call).await,
        Native::SetCapability => provisioning::set_capability(call).await,
        Native::ListCapabilities => provisioning::list_capabilities(call).await,
        Native::StartProvisioning => provisioning::start(call).await,
        Native::GetProvisioning => provisioning::get(call).await,
        Native::PutProvider => providers::put(call).await,
        Native::GetProvider => providers::get(call).await,
        Native::ListProviders => providers::list(call).await,
        Native::DeleteProvider => providers::delete(call).await,
        Native::ListOptimizations => optimizations::list(call).await,
        Native::GetOptimization => optimizations::get(call).await,
        Native::ApproveOptimization => optimizations::approve(call).await,
        Native::RejectOptimization => optimizations::reject(call).await,
        Native::RollbackOptimization => optimizations::rollback(call).await,
        Native::RunOptimizer => optimizations::run(call).await,
        Native::OpenApi => openapi::serve(call).await,
        Native::Console => crate::console::handle(call).await,
        Native::GetSettings => settings::get(call).await,
        Native::PutSettings => settings::put(call).await,
        Native::GetSchedule => schedules::get(call).await,
        Native::PutSchedule => schedules::put(call).await,
        Native::DeleteSchedule => schedules::delete(call).await,
        Native::ListAgentRuns => agent_runs::list(call).await,
    }
}

/// Parse, then act: the body as the handler's own request type, before anything happens.
/// Not an object: `body: must be a JSON object`; a missing field: `<field>: is required`;
/// a value of the wrong type: `<field>: must be <what was expected>` (400 VALIDATION_FAILED).
fn parse<T: DeserializeOwned>(call: &Call<'_>) -> Result<T, ApiError> {
    let value = match &call.json {
        Some(v @ Value::Object(_)) => v,
        _ => return Err(ApiError::invalid("body", "must be a JSON object")),
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        if let Some(field) = inner.strip_prefix("missing field `").and_then(|f| f.split('`').next()) {
            let at = e.path().to_string();
            let field = if at == "." { field.to_string() } else { format!("{at}.{field}") };
            return ApiError::invalid(&field, "is required");
        }
        if let Some(field) = inner.strip_prefix("unknown field `").and_then(|f| f.split('`').next()) {
            let at = e.path().to_string();
            // The path may or may not already name the unknown key.
            let field = match at.as_str() {
                "." => field.to_string(),
                a if a == field || a.ends_with(&format!(".{field}")) => at.clone(),
                _ => format!("{at}.{field}"),
            };
            return ApiError::invalid(&field, "is not a known field");
        }
        let problem = match inner.split_once(", expected ") {
            Some((_, expected)) => format!("must be {expected}"),
            None => "is invalid".to_string(),
        };
        ApiError::invalid(&e.path().to_string(), &problem)
    })
}

/// A body that may be absent (`null` or empty): the handler's request type, or its default.
fn parse_or_default<T: DeserializeOwned + Default>(call: &Call<'_>) -> Result<T, ApiError> {
    match &call.json {
        None | Some(Value::Null) => Ok(T::default()),
        Some(_) => parse(call),
    }
}

/// A UUID path parameter; anything else is a resource that cannot exist (404).
fn uuid_param(call: &Call<'_>, name: &str) -> Result<Uuid, ApiError> {
    call.param(name).and_then(|v| Uuid::parse_str(v).ok()).ok_or_else(ApiError::not_found)
}
