//! Super-admin routes: orgs, plans and tokens. The work itself is in `ops`, shared with the CLI.

use http::StatusCode;
use serde_json::json;

use serde::Deserialize;

use super::{parse, uuid_param};
use crate::error::ApiError;
use crate::ops;
use crate::phases::{Call, Reply};

#[derive(Deserialize)]
struct CreateOrg {
    name: String,
    plan: Option<String>,
}

/// `POST /v1/admin/orgs {"name", "plan"?}` → 201 `{"org_id"}`.
pub async fn create_org(call: Call<'_>) -> Result<Reply, ApiError> {
    let CreateOrg { name, plan } = parse(&call)?;
    let (name, plan) = (name.as_str(), plan.as_deref());
    let routing = call.state.routing();
    let policies = &routing.policies;
    let id = ops::create_org(&call.state.pool, policies, name, plan).await?;
    let plan = plan.unwrap_or(&policies.default_plan);
    Ok(Reply::json(StatusCode::CREATED, json!({ "org_id": id, "plan": plan })))
}

#[derive(Deserialize)]
struct UpdateOrg {
    plan: String,
}

/// `PATCH /v1/admin/orgs/{org_id} {"plan"}` → 200.
pub async fn update_org(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let UpdateOrg { plan } = parse(&call)?;
    let plan = plan.as_str();
    ops::set_plan(&call.state.pool, &call.state.routing().policies, org, plan).await?;
    call.state.directory.invalidate_all();
    Ok(Reply::json(StatusCode::OK, json!({ "org_id": org, "plan": plan })))
}

#[derive(Deserialize)]
struct CreateToken {
    role: String,
    email: String,
}

/// `POST /v1/admin/orgs/{org_id}/tokens {"role", "email"}` → 201 `{"token", "user_id"}`.
pub async fn create_token(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let CreateToken { role, email } = parse(&call)?;
    let (role, email) = (role.as_str(), email.as_str());
    let t = ops::create_token(&call.state.pool, org, role, email).await?;
    call.state.directory.invalidate_all();
    Ok(Reply::json(
        StatusCode::CREATED,
        json!({ "token": t.token, "token_id": t.token_id, "user_id": t.user_id, "org_id": org, "role": role }),
    ))
}

/// `DELETE /v1/admin/tokens/{token_id}` → 204.
pub async fn revoke_token(call: Call<'_>) -> Result<Reply, ApiError> {
    let id = uuid_param(&call, "token_id")?;
    ops::revoke_token(&call.state.pool, id).await?;
    call.state.directory.invalidate_all();
    Ok(Reply::no_content())
}
