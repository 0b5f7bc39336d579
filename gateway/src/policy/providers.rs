//! `[providers.<name>]`: providers: for webhooks, their signature scheme, event key and
//! retries; for adapters (docs/providers.md), the capability they serve, their public API's
//! base URL and the pace their credential may be used at.

use std::collections::HashMap;

use serde::Deserialize;

use super::units::{Quota, Rate};
use super::{valid_name, Fail};

/// A webhook provider declared by `[providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderSpec {
    /// Id of the internal plugin route that processes this provider's events.
    route: String,
    /// For the `hmac-sha256` scheme: the header carrying the hex HMAC-SHA256 of the raw body.
    #[serde(default)]
    signature_header: Option<String>,
    /// For the `hmac-sha256` scheme: JSON pointers whose values, joined by `:`, make the event key.
    #[serde(default)]
    event_key: Vec<String>,
    /// A JSON pointer to the event type (informational, shown in event listings).
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    retry_base_ms: Option<u32>,
    /// Provider adapters: the capability served (`email_outreach`, `linkedin_outreach`).
    #[serde(default)]
    capability: Option<String>,
    /// Provider adapters: the provider's public API, the default of an org's `base_url`.
    #[serde(default)]
    base_url: Option<String>,
    /// Provider adapters: the pace of calls with one org's credential.
    #[serde(default)]
    rate: Option<Rate>,
    #[serde(default)]
    burst: Option<u32>,
    /// The webhook scheme of endpoints created for this provider.
    #[serde(default)]
    verify: Option<String>,
}

/// Webhook schemes an endpoint can be created with (`webhook_endpoints.scheme`).
pub const SCHEMES: &[&str] = &["standard-webhooks", "hmac-sha256", "smartlead", "url-token"];

/// Capabilities a provider adapter can serve (`org_capabilities.capability`).
pub const CAPABILITIES: &[&str] = &["email_outreach", "linkedin_outreach"];

/// A webhook provider, validated.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The internal route whose plugin processes events.
    pub route: String,
    /// Lower-case header name (hmac-sha256 scheme); `None`: the provider signs with Standard
    /// Webhooks only.
    pub signature_header: Option<String>,
    pub event_key: Vec<String>,
    pub event_type: Option<String>,
    pub max_attempts: u32,
    pub retry_base_ms: u32,
    /// The capability this provider's adapter serves, when it is an adapter.
    pub capability: Option<String>,
    /// The default base URL of the provider's API (adapters).
    pub base_url: Option<String>,
    /// Pace of calls with one org's credential (adapters); `None`: unpaced.
    pub pace: Option<Quota>,
    /// The scheme of webhook endpoints created for it by provisioning (one of [`SCHEMES`]).
    pub verify: Option<String>,
    pub source: String,
}

/// Adds one file's providers, validated (their routes are checked once every file is read).
pub(super) fn collect(specs: &HashMap<String, ProviderSpec>, file: &str, fail: &Fail<'_>, providers: &mut HashMap<String, Provider>) -> crate::Result<()> {
    let mut names: Vec<_> = specs.keys().cloned().collect();
    names.sort();
    for name in names {
        let bad = |reason: String| fail(None, format!("provider {name:?}: {reason}"));
        if let Some(other) = providers.get(&name) {
            return Err(bad(format!("already declared in {}", other.source)));
        }
        if !valid_name(&name) {
            return Err(bad("use lower-case letters, digits and -".into()));
        }
        let provider = build(name.clone(), &specs[&name], file).map_err(bad)?;
        providers.insert(name, provider);
    }
    Ok(())
}

fn build(name: String, p: &ProviderSpec, file: &str) -> std::result::Result<Provider, String> {
    for ptr in p.event_key.iter().chain(&p.event_type) {
        if !ptr.starts_with('/') {
            return Err(format!("{ptr:?} is not a JSON pointer (starts with /)"));
        }
    }
    let signature_header = match &p.signature_header {
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!("signature_header {h:?} is not a header name"));
            }
            if p.event_key.is_empty() {
                return Err("signature_header needs event_key (JSON pointers to the message id and type)".into());
            }
            Some(h)
        }
        None => None,
    };
    let max_attempts = p.max_attempts.unwrap_or(5);
    if !(1..=50).contains(&max_attempts) {
        return Err("max_attempts must be between 1 and 50".into());
    }
    if let Some(c) = &p.capability {
        if !CAPABILITIES.contains(&c.as_str()) {
            return Err(format!("capability {c:?} is not one of {CAPABILITIES:?}"));
        }
    }
    if let Some(v) = &p.verify {
        if !SCHEMES.contains(&v.as_str()) {
            return Err(format!("verify {v:?} is not one of {SCHEMES:?}"));
        }
    }
    if let Some(u) = &p.base_url {
        let uri: http::Uri = u.parse().map_err(|_| format!("base_url {u:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(format!("base_url {u:?} must be an absolute http(s) URL"));
        }
    }
    if p.burst.is_some() && p.rate.is_none() {
        return Err("burst needs rate".into());
    }
    Ok(Provider {
        name,
        route: p.route.clone(),
        signature_header,
        event_key: p.event_key.clone(),
        event_type: p.event_type.clone(),
        max_attempts,
        retry_base_ms: p.retry_base_ms.unwrap_or(1000).clamp(1, 3_600_000),
        capability: p.capability.clone(),
        base_url: p.base_url.clone(),
        pace: p.rate.map(|rate| Quota { rate, burst: p.burst }),
        verify: p.verify.clone(),
        source: file.to_string(),
    })
}
