//! Super-admin routes of the plugin registry. The work is in `registry`, shared with the CLI.

use http::StatusCode;
use serde_json::json;

use super::parse;
use crate::error::ApiError;
use crate::phases::{Call, Reply};
use crate::registry;

fn name<'a>(call: &'a Call<'_>) -> Result<&'a str, ApiError> {
    call.param("name").ok_or_else(ApiError::not_found)
}

fn query_flag(call: &Call<'_>, key: &str) -> bool {
    matches!(call.query_param(key), Some("" | "true" | "1"))
}

/// `PUT /v1/admin/plugins/{name}[?activate=true]` with the component bytes → 201.
pub async fn upload(call: Call<'_>) -> Result<Reply, ApiError> {
    let name = name(&call)?;
    registry::declared(&call.state.routing().policies, name)?;
    let actor = Some(call.caller.token_id);
    let up = registry::upload(&call.state.pool, &call.state.runtime, name, call.body.to_vec(), actor).await?;
    let mut active = false;
    if query_flag(&call, "activate") {
        registry::activate(&call.state.pool, &call.state.routing().policies, name, up.version, actor).await?;
        registry::sync(call.state, Some(name)).await?;
        active = true;
    }
    Ok(Reply::json(
        StatusCode::CREATED,
        json!({ "name": up.name, "version": up.version, "label": up.label,
            "served_as": registry::served_label(up.version, up.label.as_deref()), "sha256": up.sha256, "wit": up.wit, "active": active }),
    ))
}

#[derive(serde::Deserialize)]
struct Activate {
    version: Option<i64>,
}

/// `POST /v1/admin/plugins/{name}/activate {"version"}` → 200 `{"name", "from", "to"}`.
pub async fn activate(call: Call<'_>) -> Result<Reply, ApiError> {
    let name = name(&call)?;
    let Activate { version } = parse(&call).map_err(|_| ApiError::invalid("version", "must be a positive integer"))?;
    let version = version.filter(|v| (1..=i32::MAX as i64).contains(v)).ok_or_else(|| ApiError::invalid("version", "must be a positive integer"))? as i32;
    registry::declared(&call.state.routing().policies, name)?;
    let (from, to) = registry::activate(&call.state.pool, &call.state.routing().policies, name, version, Some(call.caller.token_id)).await?;
    // This replica serves the new version from the next request on.
    registry::sync(call.state, Some(name)).await?;
    Ok(Reply::json(StatusCode::OK, json!({ "name": name, "from": from, "to": to })))
}

/// `POST /v1/admin/plugins/{name}/rollback` → 200 `{"name", "from", "to"}`.
pub async fn rollback(call: Call<'_>) -> Result<Reply, ApiError> {
    let name = name(&call)?;
    let (from, to) = registry::rollback(&call.state.pool, name, Some(call.caller.token_id)).await?;
    registry::sync(call.state, Some(name)).await?;
    Ok(Reply::json(StatusCode::OK, json!({ "name": name, "from": from, "to": to })))
}

/// `POST /v1/admin/plugins/{name}/deactivate` → 200 `{"name", "from", "to": null}`: the
/// policy's file serves again.
pub async fn deactivate(call: Call<'_>) -> Result<Reply, ApiError> {
    let name = name(&call)?;
    registry::declared(&call.state.routing().policies, name)?;
    let from = registry::deactivate(&call.state.pool, name, Some(call.caller.token_id)).await?;
    registry::sync(call.state, Some(name)).await?;
    Ok(Reply::json(StatusCode::OK, json!({ "name": name, "from": from, "to": null })))
}

/// `GET /v1/admin/plugins` → every version, with who uploaded it, when, and which is active.
pub async fn list(call: Call<'_>) -> Result<Reply, ApiError> {
    Ok(Reply::json(StatusCode::OK, registry::list(&call.state.pool).await?))
}

/// `GET /v1/admin/plugins/{name}/failures` → this replica's recent failures of the plugin,
/// newest first (`plugin::failures`: per replica, kept in memory, bounded).
pub async fn failures(call: Call<'_>) -> Result<Reply, ApiError> {
    let name = name(&call)?;
    let failures = call.state.runtime.failures.recent(name);
    Ok(Reply::json(
        StatusCode::OK,
        json!({ "name": name, "scope": "replica", "kept": crate::plugin::failures::PER_PLUGIN, "failures": failures }),
    ))
}
