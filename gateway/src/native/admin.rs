//! Super-admin routes: orgs, plans and tokens. The work itself is in `ops`, shared with the CLI.

use http::StatusCode;
use serde_json::json;

use super::{object, required_string, string_field, uuid_param};
use crate::error::ApiError;
use crate::ops;
use crate::phases::{Call, Reply};

/// `POST /v1/admin/orgs {"name", "plan"?}` → 201 `{"org_id"}`.
pub async fn create_org(call: Call<'_>) -> Result<Reply, ApiError> {
    let m = object(&call)?;
    let name = required_string(m, "name")?;
    let plan = string_field(m, "plan")?;
    let policies = call.state.policies();
    let id = ops::create_org(&call.state.pool, &policies, name, plan).await?;
    let plan = plan.unwrap_or(&policies.default_plan);
    Ok(Reply::json(StatusCode::CREATED, json!({ "org_id": id, "plan": plan })))
}

/// `PATCH /v1/admin/orgs/{org_id} {"plan"}` → 200.
pub async fn update_org(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let m = object(&call)?;
    let plan = required_string(m, "plan")?;
    ops::set_plan(&call.state.pool, &call.state.policies(), org, plan).await?;
    call.state.directory.invalidate_all();
    Ok(Reply::json(StatusCode::OK, json!({ "org_id": org, "plan": plan })))
}

/// `POST /v1/admin/orgs/{org_id}/tokens {"role", "email"}` → 201 `{"token", "user_id"}`.
pub async fn create_token(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let m = object(&call)?;
    let role = required_string(m, "role")?;
    let email = required_string(m, "email")?;
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
