//! `GET /v1/whoami`: the caller as the gateway sees it.

use http::StatusCode;
use serde_json::json;

use crate::error::ApiError;
use crate::phases::{Call, Reply};

pub async fn whoami(call: Call<'_>) -> Result<Reply, ApiError> {
    let c = &call.caller;
    Ok(Reply::json(
        StatusCode::OK,
        json!({ "org_id": c.org, "user_id": c.user, "role": c.role.as_str() }),
    ))
}
