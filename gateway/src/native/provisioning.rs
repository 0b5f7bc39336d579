//! Super-admin routes for entitlements and provisioning (`docs/providers.md`, "Entitlements
//! and provisioning"): which provider serves a capability for an org, and the explicit
//! provisioning that registers the org's webhook endpoint at the provider.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{parse, parse_or_default, uuid_param};
use crate::db::{self, campaigns as store, TenantTx};
use crate::error::{ApiError, Code};
use crate::phases::{Call, Reply};
use crate::policy::providers::CAPABILITIES;
use crate::webhooks::{self, Scheme};

/// The org in the path, which must exist (else 404), and a tenant transaction in it.
async fn org_tx(call: &Call<'_>) -> Result<(Uuid, TenantTx), ApiError> {
    let org = uuid_param(call, "org_id")?;
    if db::orgs::plan_of(&call.state.pool, org).await?.is_none() {
        return Err(ApiError::not_found());
    }
    Ok((org, db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?))
}

fn capability_param<'c>(call: &'c Call<'_>) -> Result<&'c str, ApiError> {
    let c = call.param("capability").unwrap_or_default();
    if !CAPABILITIES.contains(&c) {
        return Err(ApiError::invalid("capability", &format!("must be one of {}", CAPABILITIES.join(", "))));
    }
    Ok(c)
}

fn not_enabled(capability: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("the {capability} capability is not enabled for this org"))
        .with_code("CAPABILITY_NOT_ENABLED".into())
}

fn not_configured(provider: &str) -> ApiError {
    ApiError::new(Code::Conflict, format!("provider {provider:?} is not configured for this org"))
        .with_code("PROVIDER_NOT_CONFIGURED".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCapability {
    provider: String,
}

/// `PUT /v1/admin/orgs/{org_id}/capabilities/{capability} {"provider"}` → 200. The provider
/// must be declared in the policies as serving that capability.
pub async fn set_capability(call: Call<'_>) -> Result<Reply, ApiError> {
    let capability = capability_param(&call)?;
    let SetCapability { provider } = parse(&call)?;
    {
        let routing = call.state.routing();
        let serves = routing.policies.providers.values().filter(|p| p.capability.as_deref() == Some(capability));
        let mut known: Vec<&str> = serves.map(|p| p.name.as_str()).collect();
        if !known.contains(&provider.as_str()) {
            known.sort();
            return Err(ApiError::invalid("provider", &format!("must be a provider serving {capability} (declared: {})", known.join(", "))));
        }
    }
    let (org, mut tx) = org_tx(&call).await?;
    let row = store::set_capability(&mut tx, capability, &provider).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org, capability, provider = %provider, "capability_set");
    Ok(Reply::json(StatusCode::OK, json!({ "capability": row.capability, "provider": row.provider, "updated_at": row.updated_at })))
}

/// `GET /v1/admin/orgs/{org_id}/capabilities`.
pub async fn list_capabilities(call: Call<'_>) -> Result<Reply, ApiError> {
    let (_, mut tx) = org_tx(&call).await?;
    let rows = store::capabilities(&mut tx).await?;
    tx.commit().await?;
    let list: Vec<_> = rows.iter().map(|r| json!({ "capability": r.capability, "provider": r.provider, "updated_at": r.updated_at })).collect();
    Ok(Reply::json(StatusCode::OK, json!({ "capabilities": list })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Provision {}

/// `POST /v1/admin/orgs/{org_id}/provisioning/{capability}` → 202 `{"job_id", "status"}`.
/// In one transaction: reuses (or creates) the org's webhook endpoint for the provider,
/// enqueues the `provision` job and marks the provisioning pending.
pub async fn start(call: Call<'_>) -> Result<Reply, ApiError> {
    let capability = capability_param(&call)?;
    let _: Provision = parse_or_default(&call)?;
    let (org, mut tx) = org_tx(&call).await?;
    // Locked: concurrent requests for the same capability serialise here, so one endpoint.
    let provider = store::capability(&mut tx, capability, true).await?.ok_or_else(|| not_enabled(capability))?.provider;
    let policy = call.state.routing().policies.providers.get(&provider).cloned().ok_or_else(|| not_configured(&provider))?;
    let scheme = policy.verify.clone().unwrap_or_else(|| "standard-webhooks".into());
    let retries = (policy.max_attempts as i32, policy.retry_base_ms as i32);
    if db::providers::config(&call.state.pool, org, &provider).await?.is_none() {
        return Err(not_configured(&provider));
    }
    let endpoint = match store::live_endpoint(&mut tx, &provider, &scheme).await? {
        Some(id) => id,
        None => {
            // Smartlead's webhook secret is set in Smartlead's UI, not through its API: the
            // endpoint verifies with the one the operator stored for the org (`webhook_secret`).
            // Every other scheme's secret is generated here.
            let secret = if scheme == Scheme::Smartlead.as_str() {
                let s = call.state.providers.secret(org, &provider, "webhook_secret").await?.ok_or_else(|| {
                    ApiError::new(Code::Conflict, format!("provider {provider:?} needs a webhook_secret for this org (the one set in its UI)"))
                        .with_code("PROVIDER_NOT_CONFIGURED".into())
                })?;
                Some(s)
            } else {
                None
            };
            let key = call.state.endpoints.key();
            webhooks::create_endpoint(&mut tx, key, &policy, Some(&scheme), secret.as_ref().map(|s| s.expose()), call.caller.user)
                .await?
                .id
        }
    };
    // The webhook URL is built when the job runs (`provider_sync`), so a URL secret is never
    // stored outside its sealed form.
    let payload = json!({ "op": "provision", "provider": provider, "capability": capability, "webhook_endpoint_id": endpoint });
    let job = store::enqueue_sync(&mut tx, None, &payload, retries.0, retries.1).await?;
    store::start_provisioning(&mut tx, capability, &provider, job, endpoint).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org, capability, provider = %provider, endpoint_id = %endpoint, job_id = %job, "provisioning_requested");
    Ok(Reply::json(StatusCode::ACCEPTED, json!({ "job_id": job, "status": "pending", "webhook_endpoint_id": endpoint })))
}

/// `GET /v1/admin/orgs/{org_id}/provisioning/{capability}`.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let capability = capability_param(&call)?;
    let (_, mut tx) = org_tx(&call).await?;
    store::capability(&mut tx, capability, false).await?.ok_or_else(|| not_enabled(capability))?;
    let row = store::provisioning(&mut tx, capability).await?.ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(Reply::json(
        StatusCode::OK,
        json!({
            "capability": row.capability, "provider": row.provider, "status": row.status, "reason": row.reason,
            "job_id": row.job_id, "webhook_endpoint_id": row.webhook_endpoint_id, "updated_at": row.updated_at,
        }),
    ))
}
