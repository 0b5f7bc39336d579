//! Phase 1, the tenant guard: authenticate the bearer token, decide the org (from the token,
//! or `X-Org-Id` for a super-admin, never from the payload) and check the route's roles.
//! On webhook routes the endpoint named in the path decides the org; its signature is
//! checked by the `verify` phase once the body is read. Public routes (`auth = "public"`)
//! have an anonymous caller.

use std::net::IpAddr;

use http::HeaderMap;
use uuid::Uuid;

use crate::error::{ApiError, Code};
use crate::role::Role;
use crate::policy::{Auth, Route, Scope};
use crate::state::AppState;

pub use crate::auth::Caller;

fn unauthenticated() -> ApiError {
    ApiError::new(Code::Unauthenticated, "missing, unknown or revoked bearer token")
        .with_header("www-authenticate", "Bearer")
}

/// 429 for a client address that keeps presenting unknown credentials (see `auth::Strangers`).
fn stranger(state: &AppState, peer: IpAddr) -> Result<(), ApiError> {
    match state.strangers.blocked(peer) {
        None => Ok(()),
        Some(wait) => {
            state.metrics.ratelimited("unknown_credential");
            Err(ApiError::new(Code::RateLimited, "too many unknown credentials from this address")
                .with_header("retry-after", (wait.as_secs_f64().ceil() as u64).max(1).to_string()))
        }
    }
}

pub async fn check(state: &AppState, route: &Route, params: &[(String, String)], headers: &HeaderMap, peer: IpAddr) -> Result<Caller, ApiError> {
    match route.auth {
        Auth::Webhook => return webhook(state, params, peer).await,
        Auth::Public => return Ok(anonymous()),
        Auth::Console => return crate::console::guard(state, route, headers, peer).await,
        Auth::Bearer => {}
    }
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(unauthenticated)?;
    if !state.directory.known(token) {
        stranger(state, peer)?;
    }
    let Some(p) = state.directory.authenticate(&state.pool, token).await? else {
        state.strangers.failed(peer);
        return Err(unauthenticated());
    };
    if !route.allows(p.role) {
        return Err(ApiError::forbidden("your role may not call this route"));
    }
    let (org, plan) = match (route.scope, p.role) {
        (Scope::Platform, _) => (None, None),
        (Scope::Tenant, Role::SuperAdmin) => {
            let raw = headers
                .get("x-org-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ApiError::new(Code::MissingTenantId, "super-admins name the org in X-Org-Id")
                })?;
            let org = Uuid::parse_str(raw.trim())
                .map_err(|_| ApiError::invalid("X-Org-Id", "must be a UUID"))?;
            let plan = state.directory.org_plan(&state.pool, org).await?.ok_or_else(ApiError::not_found)?;
            tracing::info!(org_id = %org, token_id = %p.token_id, route = %route.id, "super_admin_acting_in_org");
            (Some(org), Some(plan))
        }
        (Scope::Tenant, _) => (p.org, p.plan.clone()),
    };
    Ok(Caller { org, plan, ..p })
}

/// The caller of a public route: no token, no user, no org (so no tenant quota and no
/// tenant transaction); the role is the least one and no handler behind such a route reads it.
fn anonymous() -> Caller {
    Caller { role: Role::Member, token_id: Uuid::nil(), user: None, org: None, plan: None, endpoint: None }
}

/// Unknown, malformed and disabled endpoint ids are all 404: nothing tells them apart.
async fn webhook(state: &AppState, params: &[(String, String)], peer: IpAddr) -> Result<Caller, ApiError> {
    let id = params
        .iter()
        .find(|(k, _)| k == "endpoint_id")
        .and_then(|(_, v)| Uuid::parse_str(v).ok())
        .ok_or_else(ApiError::not_found)?;
    if !state.endpoints.is_cached(id) {
        stranger(state, peer)?;
    }
    let Some(endpoint) = state.endpoints.get(&state.pool, id).await? else {
        state.strangers.failed(peer);
        return Err(ApiError::not_found());
    };
    let plan = state.directory.org_plan(&state.pool, endpoint.org).await?.ok_or_else(ApiError::not_found)?;
    Ok(Caller { role: Role::Member, token_id: id, user: None, org: Some(endpoint.org), plan: Some(plan), endpoint: Some(endpoint) })
}
