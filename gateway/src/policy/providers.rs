//! `[providers.<name>]`: webhook providers, their signature header, event key and retries.

use std::collections::HashMap;

use serde::Deserialize;

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
}

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
    Ok(Provider {
        name,
        route: p.route.clone(),
        signature_header,
        event_key: p.event_key.clone(),
        event_type: p.event_type.clone(),
        max_attempts,
        retry_base_ms: p.retry_base_ms.unwrap_or(1000).clamp(1, 3_600_000),
        source: file.to_string(),
    })
}
