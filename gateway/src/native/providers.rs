//! Super-admin routes for orgs' provider credentials (docs/providers.md): set, show (never a
//! secret), list, remove. Sealing and the base-URL rules are `providers`'; SQL is
//! `db::providers`'.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{parse, uuid_param};
use crate::db;
use crate::error::ApiError;
use crate::phases::{Call, Reply};
use crate::policy::Provider;
use crate::providers::WEBHOOK_SECRET;

/// Credentials one provider configuration may hold.
const MAX_CREDENTIALS: usize = 16;
/// A secret's length bounds: short values would make redaction replace ordinary text.
const SECRET_MIN: usize = 8;
const SECRET_MAX: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutProvider {
    credentials: BTreeMap<String, String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
}

/// The provider named in the path, declared in the policies; otherwise 404.
fn declared(call: &Call<'_>) -> Result<Provider, ApiError> {
    let name = call.param("provider").unwrap_or_default();
    call.state.routing().policies.providers.get(name).cloned().ok_or_else(ApiError::not_found)
}

/// A credential name as `provider_secrets.name` stores it.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b.len() <= 64 && b[0].is_ascii_lowercase() && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// Visible ASCII only: it goes into headers and query strings as it is.
fn check_secret(field: &str, value: &str) -> Result<(), ApiError> {
    if !(SECRET_MIN..=SECRET_MAX).contains(&value.len()) {
        return Err(ApiError::invalid(field, &format!("must be {SECRET_MIN} to {SECRET_MAX} characters")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(field, "must be visible ASCII characters (no spaces or control characters)"));
    }
    Ok(())
}

fn summary(s: &db::providers::Summary) -> Value {
    json!({
        "provider": s.config.provider,
        "configured": true,
        "base_url": s.config.base_url,
        "credentials": s.secret_names.iter().filter(|n| *n != WEBHOOK_SECRET).collect::<Vec<_>>(),
        "webhook_secret": s.secret_names.iter().any(|n| n == WEBHOOK_SECRET),
        "updated_at": s.config.updated_at,
    })
}

/// `PUT /v1/admin/orgs/{org_id}/providers/{provider}` `{"credentials", "base_url"?,
/// "webhook_secret"?}` → 200 the configuration (names only). Replaces every credential.
pub async fn put(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let provider = declared(&call)?;
    let body: PutProvider = parse(&call)?;
    if body.credentials.is_empty() || body.credentials.len() > MAX_CREDENTIALS {
        return Err(ApiError::invalid("credentials", &format!("must hold 1 to {MAX_CREDENTIALS} credentials")));
    }
    for (name, value) in &body.credentials {
        let field = format!("credentials.{name}");
        if name == WEBHOOK_SECRET {
            return Err(ApiError::invalid(&field, "is reserved: give it as `webhook_secret`"));
        }
        if !valid_name(name) {
            return Err(ApiError::invalid(&field, "names must be lower-case letters, digits and _, starting with a letter (at most 64)"));
        }
        check_secret(&field, value)?;
    }
    if let Some(w) = &body.webhook_secret {
        check_secret("webhook_secret", w)?;
    }
    let providers = &call.state.providers;
    let base_url = match (&body.base_url, &provider.base_url) {
        (Some(url), _) => providers.check_base_url(url, true).await?,
        (None, Some(default)) => providers.check_base_url(default, false).await?,
        (None, None) => return Err(ApiError::invalid("base_url", "is required: the provider declares no default")),
    };
    let mut sealed: Vec<(String, Vec<u8>)> =
        body.credentials.iter().map(|(n, v)| (n.clone(), providers.seal(org, &provider.name, n, v))).collect();
    if let Some(w) = &body.webhook_secret {
        sealed.push((WEBHOOK_SECRET.to_string(), providers.seal(org, &provider.name, WEBHOOK_SECRET, w)));
    }
    let s = db::providers::put(&call.state.pool, org, &provider.name, &base_url, &sealed).await?.ok_or_else(ApiError::not_found)?;
    providers.invalidate_all();
    tracing::info!(org_id = %org, provider = %provider.name, credentials = body.credentials.len(),
        webhook_secret = body.webhook_secret.is_some(), "provider_configured");
    Ok(Reply::json(StatusCode::OK, summary(&s)))
}

/// `GET /v1/admin/orgs/{org_id}/providers/{provider}` → the configuration, or
/// `"configured": false` with the provider's default `base_url`.
pub async fn get(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let provider = declared(&call)?;
    let found = db::providers::get(&call.state.pool, org, &provider.name).await?.ok_or_else(ApiError::not_found)?;
    let body = match found {
        Some(s) => summary(&s),
        None => json!({
            "provider": provider.name,
            "configured": false,
            "base_url": provider.base_url,
            "credentials": [],
            "webhook_secret": false,
            "updated_at": null,
        }),
    };
    Ok(Reply::json(StatusCode::OK, body))
}

/// `GET /v1/admin/orgs/{org_id}/providers` → `{"providers": [...]}`, the configured ones.
pub async fn list(call: Call<'_>) -> Result<Reply, ApiError> {
    let org: Uuid = uuid_param(&call, "org_id")?;
    let all = db::providers::list(&call.state.pool, org).await?.ok_or_else(ApiError::not_found)?;
    Ok(Reply::json(StatusCode::OK, json!({ "providers": all.iter().map(summary).collect::<Vec<_>>() })))
}

/// `DELETE /v1/admin/orgs/{org_id}/providers/{provider}` → 204; 404 when not configured.
pub async fn delete(call: Call<'_>) -> Result<Reply, ApiError> {
    let org = uuid_param(&call, "org_id")?;
    let provider = declared(&call)?;
    if !db::providers::delete(&call.state.pool, org, &provider.name).await? {
        return Err(ApiError::not_found());
    }
    call.state.providers.invalidate_all();
    tracing::info!(org_id = %org, provider = %provider.name, "provider_removed");
    Ok(Reply::no_content())
}
