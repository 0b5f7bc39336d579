//! `GET|PUT /v1/settings` (docs/optimizer.md, "Routes"): the org's optimizer and chain
//! settings. A new `notify_url` gets a new signing secret, sealed (bound to the org) and shown
//! once; SQL is `db::settings`'.

use http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::parse;
use crate::chain::{new_notify_secret, notify_aad};
use crate::db::{self, settings::SettingsRow};
use crate::error::ApiError;
use crate::phases::{Call, Reply};

/// Present (`Some(None)` for `null`) or absent (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSettings {
    #[serde(default)]
    require_manual_approval: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    notify_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    llm_model: Option<Option<String>>,
}

fn settings_json(row: Option<&SettingsRow>) -> Value {
    match row {
        Some(r) => json!({
            "require_manual_approval": r.require_manual_approval,
            "notify_url": r.notify_url,
            "llm_model": r.llm_model,
            "updated_at": r.updated_at,
        }),
        None => json!({ "require_manual_approval": true, "notify_url": null, "llm_model": null, "updated_at": null }),
    }
}

fn check_model(model: &str) -> Result<(), ApiError> {
    let ok = (1..=100).contains(&model.len())
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("llm_model", "must be 1 to 100 of A-Z a-z 0-9 . _ : / -"))
    }
}

/// `GET /v1/settings`: the org's settings, or the defaults.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let row = db::settings::get(&mut tx, false).await?;
    tx.commit().await?;
    Ok(Reply::json(StatusCode::OK, settings_json(row.as_ref())))
}

/// `PUT /v1/settings {"require_manual_approval"?, "notify_url"?, "llm_model"?}`: what is
/// given changes, the rest stays; a `notify_url` that is new (or different) gets a new
/// `notify_secret`, in this answer only; `null` clears it and its secret.
pub async fn put(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = call.caller.org.ok_or_else(ApiError::not_found)?;
    let body: PutSettings = parse(&call)?;
    if let Some(Some(m)) = &body.llm_model {
        check_model(m)?;
    }
    let url = match &body.notify_url {
        Some(Some(u)) => Some(Some(call.state.providers.check_url("notify_url", u, true).await?)),
        other => other.clone(),
    };
    let mut tx = db::begin_tenant(&call.state.pool, org, call.caller.role.into()).await?;
    let current = db::settings::get(&mut tx, true).await?;
    let (old_url, old_secret) = current.as_ref().map(|c| (c.notify_url.clone(), c.notify_secret.clone())).unwrap_or_default();
    let mut shown = None;
    let (notify_url, notify_secret) = match url {
        None => (old_url, old_secret),
        Some(None) => (None, None),
        Some(Some(u)) if old_url.as_deref() == Some(u.as_str()) && old_secret.is_some() => (Some(u), old_secret),
        Some(Some(u)) => {
            let secret = new_notify_secret();
            let sealed = call.state.endpoints.key().seal_bound(&notify_aad(org), secret.as_bytes());
            shown = Some(secret);
            (Some(u), Some(sealed))
        }
    };
    let approval = body.require_manual_approval.or(current.as_ref().map(|c| c.require_manual_approval)).unwrap_or(true);
    let model = match body.llm_model {
        None => current.as_ref().and_then(|c| c.llm_model.clone()),
        Some(m) => m,
    };
    let row = db::settings::put(&mut tx, approval, notify_url.as_deref(), notify_secret.as_deref(), model.as_deref(), call.caller.user).await?;
    tx.commit().await?;
    // Never the URL (its path may carry the tenant's token) nor the secret.
    tracing::info!(org_id = %org, require_manual_approval = approval, notify_url_set = row.notify_url.is_some(),
        notify_secret_new = shown.is_some(), "settings_updated");
    let mut answer = settings_json(Some(&row));
    if let Some(s) = shown {
        answer["notify_secret"] = Value::from(s);
    }
    Ok(Reply::json(StatusCode::OK, answer))
}
