//! `[providers.<name>]`: providers: for webhooks, their signature scheme, event key and
//! retries; for adapters (docs/providers.md), the capability they serve, their public API's
//! base URL and the pace their credential may be used at. A provider without `route` is only
//! called out to (a credential grant's target, e.g. `openai`): no webhooks, no adapter.

use std::collections::HashMap;

use serde::Deserialize;

use super::units::{Quota, Rate};
use super::{valid_name, Fail};

/// A provider declared by `[providers.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderSpec {
    /// Id of the internal plugin route that processes this provider's events; none: the
    /// provider is only called out to.
    #[serde(default)]
    route: Option<String>,
    /// For the `hmac-sha256` scheme: the header carrying the hex HMAC-SHA256 of the raw body.
    #[serde(default)]
    signature_header: Option<String>,
    /// Schemes without a `webhook-id`: JSON pointers whose values, joined by `:`, make the
    /// event key; or a list of such lists, tried in order (see [`EventKey`]).
    #[serde(default)]
    event_key: Option<PointerLists>,
    /// A JSON pointer to the event type, or a list of them (the first present wins);
    /// informational, shown in event listings and passed to the adapter.
    #[serde(default)]
    event_type: Option<Pointers>,
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
    /// Secondary steps run after a fresh `reply.received` event (docs/optimizer.md).
    #[serde(default)]
    chain: Vec<String>,
}

/// `event_key` as written: one list of pointers, or a list of alternatives.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum PointerLists {
    One(Vec<String>),
    Alternatives(Vec<Vec<String>>),
}

/// `event_type` as written: one pointer or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Pointers {
    One(String),
    Several(Vec<String>),
}

/// How the event key of a delivery without a `webhook-id` is found in its JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventKey {
    /// Each alternative is a list of JSON pointers whose values, joined by `:`, make the key;
    /// the first alternative whose values are all present wins.
    pub alternatives: Vec<Vec<String>>,
    /// Written as a list of alternatives: when none is present the key is `sha256:<hex of the
    /// body>` (a provider such as Smartlead gives up on events it cannot deliver, and its
    /// opens and clicks carry no message id). Written as one flat list (as `generic` is), a
    /// body without those values is refused with 400, as it always was.
    pub body_hash_fallback: bool,
}

impl EventKey {
    /// One alternative, no fallback: the flat form.
    pub fn all_of(pointers: &[&str]) -> EventKey {
        EventKey { alternatives: vec![pointers.iter().map(|p| p.to_string()).collect()], body_hash_fallback: false }
    }

    /// Alternatives tried in order, then the body's hash.
    pub fn first_of(alternatives: &[&[&str]]) -> EventKey {
        EventKey {
            alternatives: alternatives.iter().map(|a| a.iter().map(|p| p.to_string()).collect()).collect(),
            body_hash_fallback: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.alternatives.is_empty() && !self.body_hash_fallback
    }
}

/// Webhook schemes an endpoint can be created with (`webhook_endpoints.scheme`).
pub const SCHEMES: &[&str] = &["standard-webhooks", "hmac-sha256", "smartlead", "url-token"];

/// Capabilities a provider adapter can serve (`org_capabilities.capability`).
pub const CAPABILITIES: &[&str] = &["email_outreach", "linkedin_outreach"];

/// A webhook provider, validated.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The internal route whose plugin processes events and sync jobs; `None`: the provider
    /// is only called out to (no webhook endpoints, no adapter, no capability).
    pub route: Option<String>,
    /// Lower-case header name (hmac-sha256 scheme); `None`: the provider signs with Standard
    /// Webhooks only.
    pub signature_header: Option<String>,
    pub event_key: EventKey,
    /// JSON pointers to the event type, tried in order.
    pub event_type: Vec<String>,
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
    /// The fail-soft chain after a fresh `reply.received` event: one job per step.
    pub chain: Vec<super::ChainStep>,
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
    let event_key = match &p.event_key {
        None => EventKey::default(),
        Some(PointerLists::One(list)) if list.is_empty() => EventKey::default(),
        Some(PointerLists::One(list)) => EventKey { alternatives: vec![list.clone()], body_hash_fallback: false },
        Some(PointerLists::Alternatives(alts)) => {
            if alts.iter().any(Vec::is_empty) {
                return Err("event_key: an alternative lists no pointers".into());
            }
            EventKey { alternatives: alts.clone(), body_hash_fallback: true }
        }
    };
    let event_type = match &p.event_type {
        None => vec![],
        Some(Pointers::One(p)) => vec![p.clone()],
        Some(Pointers::Several(ps)) => ps.clone(),
    };
    for ptr in event_key.alternatives.iter().flatten().chain(&event_type) {
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
            if event_key.is_empty() {
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
        if v == "hmac-sha256" && signature_header.is_none() {
            return Err("verify = \"hmac-sha256\" needs signature_header".into());
        }
    }
    // A provider scheme without `event_key` keys its events by the body's hash alone, so that
    // a repeated delivery is still recognised.
    let mut event_key = event_key;
    if matches!(p.verify.as_deref(), Some("smartlead" | "url-token")) && event_key.is_empty() {
        event_key.body_hash_fallback = true;
    }
    if let Some(u) = &p.base_url {
        let uri: http::Uri = u.parse().map_err(|_| format!("base_url {u:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(format!("base_url {u:?} must be an absolute http(s) URL"));
        }
    }
    if p.route.is_none() {
        let webhook_only = [
            ("capability", p.capability.is_some()),
            ("verify", p.verify.is_some()),
            ("signature_header", p.signature_header.is_some()),
            ("event_key", p.event_key.is_some()),
            ("event_type", p.event_type.is_some()),
            ("chain", !p.chain.is_empty()),
        ];
        if let Some((field, _)) = webhook_only.iter().find(|(_, set)| *set) {
            return Err(format!("{field} needs route (a provider without one is only called out to: no webhooks, no adapter)"));
        }
    }
    if p.burst.is_some() && p.rate.is_none() {
        return Err("burst needs rate".into());
    }
    Ok(Provider {
        name,
        route: p.route.clone(),
        signature_header,
        event_key,
        event_type,
        max_attempts,
        retry_base_ms: p.retry_base_ms.unwrap_or(1000).clamp(1, 3_600_000),
        capability: p.capability.clone(),
        base_url: p.base_url.clone(),
        pace: p.rate.map(|rate| Quota { rate, burst: p.burst }),
        verify: p.verify.clone(),
        chain: super::chain::build(&p.chain)?,
        source: file.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::PolicySet;
    use super::*;

    fn provider(fields: &str) -> crate::Result<Provider> {
        let text = format!(
            "[plugins.echo]\nfile = \"echo.wasm\"\n[[route]]\nid = \"adapter\"\ninternal = true\ntarget = \"plugin:echo\"\n\
             [providers.p]\nroute = \"adapter\"\n{fields}\n"
        );
        let plans = "[plans.standard]\ndefault = true\nper_user = { rate = \"20/s\" }\n";
        let set = PolicySet::from_sources(&[("plans.toml".into(), plans.into()), ("p.toml".into(), text)])?;
        Ok(set.providers["p"].clone())
    }

    #[test]
    fn event_keys_are_one_list_or_alternatives_and_types_one_pointer_or_several() {
        let flat = provider("signature_header = \"x-sig\"\nevent_key = [\"/id\", \"/type\"]\nevent_type = \"/type\"").unwrap();
        assert_eq!(flat.event_key, EventKey::all_of(&["/id", "/type"]));
        assert_eq!(flat.event_type, vec!["/type".to_string()]);
        let alts = provider("verify = \"smartlead\"\nevent_key = [[\"/a\", \"/t\"], [\"/b\"]]\nevent_type = [\"/t\", \"/e\"]").unwrap();
        assert_eq!(alts.event_key, EventKey::first_of(&[&["/a", "/t"], &["/b"]]));
        assert_eq!(alts.event_type, vec!["/t".to_string(), "/e".to_string()]);
        assert_eq!(provider("verify = \"url-token\"").unwrap().event_key, EventKey { alternatives: vec![], body_hash_fallback: true });
        assert!(provider("event_key = [[\"/a\"], []]").unwrap_err().to_string().contains("no pointers"));
        assert!(provider("event_key = [[\"a\"]]").unwrap_err().to_string().contains("JSON pointer"));
        assert!(provider("event_type = [\"/t\", \"e\"]").unwrap_err().to_string().contains("JSON pointer"));
        assert!(provider("verify = \"hmac-sha256\"\nevent_key = [\"/id\"]").unwrap_err().to_string().contains("signature_header"));
    }

    fn call_out_only(fields: &str) -> crate::Result<Provider> {
        let text = format!("[providers.openai]\n{fields}\n");
        let plans = "[plans.standard]\ndefault = true\nper_user = { rate = \"20/s\" }\n";
        let set = PolicySet::from_sources(&[("plans.toml".into(), plans.into()), ("o.toml".into(), text)])?;
        Ok(set.providers["openai"].clone())
    }

    #[test]
    fn a_provider_without_a_route_is_only_called_out_to() {
        let p = call_out_only("base_url = \"https://api.openai.com/v1\"\nrate = \"1/s\"\nburst = 5").unwrap();
        assert!(p.route.is_none());
        assert_eq!(p.base_url.as_deref(), Some("https://api.openai.com/v1"));
        assert!(p.pace.is_some());
        for field in ["capability = \"email_outreach\"", "verify = \"url-token\"", "event_key = [\"/id\"]", "event_type = \"/t\""] {
            let e = call_out_only(field).unwrap_err().to_string();
            assert!(e.contains("needs route"), "{field}: {e}");
        }
        // A route, when named, must still be an internal plugin route.
        let e = call_out_only("route = \"nowhere\"").unwrap_err().to_string();
        assert!(e.contains("not an internal plugin route"), "{e}");
    }
}
