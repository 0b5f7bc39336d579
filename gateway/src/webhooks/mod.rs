//! Webhook ingress: endpoints, their secrets, and what a delivery must prove.
//!
//! An endpoint belongs to one org and one provider (from `policies/`), and is verified with
//! one scheme: `standard-webhooks`, `hmac-sha256` (a provider header over the raw body),
//! `smartlead` (its signature header or the body's `secret_key`) or `url-token` (a
//! `?secret=` in the delivery URL, for providers that do not sign). The
//! endpoint, never the payload, decides the org. Secrets are shown once and kept sealed
//! ([`seal`]); [`verify`] checks deliveries; [`Endpoints`] keeps resolved endpoints in memory
//! for a few seconds, cleared across replicas by the same `NOTIFY` as credentials.
//!
//! This module does not store events or run jobs: `native::webhooks` stores, `jobs` runs.

pub mod adapter;
pub mod seal;
pub mod verify;

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::db;
use crate::error::{ApiError, Result};
use crate::policy::Provider;
use seal::SecretKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    HmacSha256,
    Smartlead,
    UrlToken,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "standard-webhooks" => Some(Scheme::StandardWebhooks),
            "hmac-sha256" => Some(Scheme::HmacSha256),
            "smartlead" => Some(Scheme::Smartlead),
            "url-token" => Some(Scheme::UrlToken),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::Smartlead => "smartlead",
            Scheme::UrlToken => "url-token",
        }
    }
}

/// A fresh secret as shown to the tenant, and the HMAC key it stands for.
///
/// `standard-webhooks`: `whsec_` + base64 of 32 random bytes; the key is those bytes.
/// `hmac-sha256`, `smartlead`, `url-token`: 64 hex characters; the key is that text
/// (providers configure it as a string and use its bytes; hex needs no escaping in a URL).
pub fn generate_secret(scheme: Scheme) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    match scheme {
        Scheme::StandardWebhooks => {
            (format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)), bytes.to_vec())
        }
        Scheme::HmacSha256 | Scheme::Smartlead | Scheme::UrlToken => {
            let text = hex::encode(bytes);
            let key = text.clone().into_bytes();
            (text, key)
        }
    }
}

/// The path a provider delivers to: `/v1/webhooks/{id}`, plus `?secret=<token>` for
/// `url-token` (which makes the path itself a secret: show it once, never log it).
pub fn delivery_path(id: Uuid, scheme: Scheme, secret: &str) -> String {
    match scheme {
        Scheme::UrlToken => format!("/v1/webhooks/{id}?secret={secret}"),
        _ => format!("/v1/webhooks/{id}"),
    }
}

/// Which scheme an endpoint for `provider` gets, given what the caller asked for: `scheme`
/// (default: the provider's `verify`) and, for `smartlead` only, the caller's own `secret`
/// (Smartlead's is typed into Smartlead's UI, so the gateway must accept it, not choose it).
pub fn endpoint_scheme(provider: &Provider, scheme: Option<&str>, secret: Option<&str>) -> Result<Scheme, ApiError> {
    if provider.route.is_none() {
        return Err(ApiError::invalid("provider", "is only called out to (its policy names no route): it receives no webhooks"));
    }
    let text = scheme.or(provider.verify.as_deref()).ok_or_else(|| ApiError::invalid("scheme", "is required (this provider's policy names no verify scheme)"))?;
    let scheme = Scheme::parse(text).ok_or_else(|| {
        ApiError::invalid("scheme", "must be \"standard-webhooks\", \"hmac-sha256\", \"smartlead\" or \"url-token\"")
    })?;
    match scheme {
        Scheme::StandardWebhooks => {}
        Scheme::HmacSha256 if provider.signature_header.is_none() => {
            return Err(ApiError::invalid("scheme", "this provider signs with standard-webhooks only (no signature_header in its policy)"));
        }
        Scheme::HmacSha256 => {}
        Scheme::Smartlead | Scheme::UrlToken if provider.verify.as_deref() != Some(scheme.as_str()) => {
            return Err(ApiError::invalid("scheme", &format!("{text} is only for providers whose policy says verify = \"{text}\"")));
        }
        Scheme::Smartlead | Scheme::UrlToken => {}
    }
    if let Some(s) = secret {
        if scheme != Scheme::Smartlead {
            return Err(ApiError::invalid("secret", "can only be given for the smartlead scheme (other secrets are generated)"));
        }
        if !(MIN_GIVEN_SECRET..=MAX_GIVEN_SECRET).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid("secret", "must be 16 to 256 visible ASCII characters (no spaces)"));
        }
    }
    Ok(scheme)
}

const MIN_GIVEN_SECRET: usize = 16;
const MAX_GIVEN_SECRET: usize = 256;

/// An endpoint just created, and its secret: shown once, never again.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub id: Uuid,
    pub scheme: Scheme,
    pub secret: String,
    /// Where the provider delivers ([`delivery_path`]): with the token for `url-token`.
    pub path: String,
}

/// Creates a webhook endpoint for `provider` in the transaction's org, with its first secret
/// (`secret`, for `smartlead` only, or a generated one), sealed under `key`. Nothing is
/// visible before the caller commits `tx`. Used by `POST /v1/webhook-endpoints` and by
/// provisioning; `scheme` `None` takes the provider's `verify`. Bad combinations are 400
/// `VALIDATION_FAILED` (see [`endpoint_scheme`]).
pub async fn create_endpoint(
    tx: &mut db::TenantTx,
    key: &SecretKey,
    provider: &Provider,
    scheme: Option<&str>,
    secret: Option<&str>,
    created_by: Option<Uuid>,
) -> Result<NewEndpoint, ApiError> {
    let scheme = endpoint_scheme(provider, scheme, secret)?;
    let id = db::webhooks::create_endpoint(tx, &provider.name, scheme.as_str(), created_by).await?;
    let (secret, hmac_key) = match secret {
        Some(s) => (s.to_string(), s.as_bytes().to_vec()),
        None => generate_secret(scheme),
    };
    db::webhooks::add_secret(tx, id, &key.seal(id, &hmac_key)).await?;
    Ok(NewEndpoint { id, scheme, path: delivery_path(id, scheme, &secret), secret })
}

/// An endpoint as ingress sees it.
#[derive(Debug)]
pub struct Endpoint {
    pub id: Uuid,
    pub org: Uuid,
    pub provider: String,
    pub scheme: Scheme,
    /// HMAC keys with their expiry (`None`: current).
    pub keys: Vec<(Vec<u8>, Option<DateTime<Utc>>)>,
}

impl Endpoint {
    /// The keys valid at `now`.
    pub fn active_keys(&self, now: DateTime<Utc>) -> Vec<&[u8]> {
        self.keys.iter().filter(|(_, exp)| exp.is_none_or(|e| e > now)).map(|(k, _)| k.as_slice()).collect()
    }
}

/// Resolved endpoints (and unknown ids), kept a few seconds.
pub struct Endpoints {
    key: SecretKey,
    cache: TtlCache<Uuid, Option<Arc<Endpoint>>>,
}

impl Endpoints {
    pub fn new(key: SecretKey) -> Endpoints {
        Endpoints { key, cache: TtlCache::default() }
    }

    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Whether the cache already knows this id (either way), so that looking it up costs
    /// no database round trip.
    pub fn is_cached(&self, id: Uuid) -> bool {
        self.cache.get(&id).is_some()
    }

    /// The active endpoint with this id, or `None` (unknown or disabled).
    pub async fn get(&self, pool: &PgPool, id: Uuid) -> Result<Option<Arc<Endpoint>>> {
        if let Some(hit) = self.cache.get(&id) {
            return Ok(hit);
        }
        let resolved = db::webhooks::resolve(pool, id).await?;
        let endpoint = resolved.filter(|r| !r.disabled).and_then(|r| {
            let scheme = Scheme::parse(&r.scheme)?;
            let keys = r
                .secrets
                .iter()
                .filter_map(|(sealed, exp)| match self.key.open(id, sealed) {
                    Some(k) => Some((k, *exp)),
                    None => {
                        tracing::error!(endpoint_id = %id, "a webhook secret does not open with this gateway's secret key (GATEWAY_SECRET_KEY differs between replicas?)");
                        None
                    }
                })
                .collect();
            Some(Arc::new(Endpoint { id, org: r.org, provider: r.provider, scheme, keys }))
        });
        self.cache.insert(id, endpoint.clone());
        Ok(endpoint)
    }

    pub fn forget(&self, id: Uuid) {
        self.cache.remove(&id);
    }

    pub fn invalidate_all(&self) {
        self.cache.clear();
    }
}

/// One alternative of an event key: the values at these JSON pointers, joined by `:` (seed
/// 000's `providerMessageId:eventType`). `None` when one is missing, null, empty or not a
/// scalar, or when the key would be longer than the 512 bytes a key may hold.
pub fn event_key(body: &Value, pointers: &[String]) -> Option<String> {
    let mut parts = Vec::with_capacity(pointers.len());
    for p in pointers {
        match body.pointer(p)? {
            Value::String(s) if !s.is_empty() => parts.push(s.clone()),
            Value::Number(n) => parts.push(n.to_string()),
            Value::Bool(b) => parts.push(b.to_string()),
            _ => return None,
        }
    }
    let key = parts.join(":");
    (!key.is_empty() && key.len() <= 512).then_some(key)
}

/// The event key of a delivery without a `webhook-id`, with the pointers it came from: the
/// first alternative of `spec` whose values are all present; else, when `spec` allows it,
/// `sha256:<hex of the raw body>` (pointers `None`), so that a repeat of the same delivery is
/// still recognised. `None`: no alternative matched and there is no fallback.
pub fn find_event_key<'s>(json: &Value, raw: &[u8], spec: &'s crate::policy::EventKey) -> Option<(String, Option<&'s [String]>)> {
    use sha2::Digest;
    if let Some((key, alt)) = spec.alternatives.iter().find_map(|alt| event_key(json, alt).map(|k| (k, alt))) {
        return Some((key, Some(alt.as_slice())));
    }
    spec.body_hash_fallback.then(|| (format!("sha256:{}", hex::encode(sha2::Sha256::digest(raw))), None))
}

/// A short text value at a JSON pointer (event types), if any.
pub fn text_at(body: &Value, pointer: &str) -> Option<String> {
    body.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 200).map(str::to_string)
}

/// The event type: the text at the first of `pointers` that holds one, with that pointer.
pub fn event_type<'p>(body: &Value, pointers: &'p [String]) -> Option<(String, &'p str)> {
    pointers.iter().find_map(|p| text_at(body, p).map(|t| (t, p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_documented_shapes() {
        let (text, key) = generate_secret(Scheme::StandardWebhooks);
        assert!(text.starts_with("whsec_"));
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&text[6..]).unwrap(), key);
        assert_eq!(key.len(), 32);
        let (text, key) = generate_secret(Scheme::HmacSha256);
        assert_eq!(text.len(), 64);
        assert_eq!(text.as_bytes(), key.as_slice());
    }

    #[test]
    fn event_keys_join_pointers_and_need_all_of_them() {
        let body = serde_json::json!({"message_id": "m1", "event": {"type": "reply"}, "n": 3});
        let ptrs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(event_key(&body, &ptrs(&["/message_id", "/event/type"])).as_deref(), Some("m1:reply"));
        assert_eq!(event_key(&body, &ptrs(&["/n"])).as_deref(), Some("3"));
        assert_eq!(event_key(&body, &ptrs(&["/message_id", "/missing"])), None);
    }

    #[test]
    fn the_first_complete_alternative_wins_then_the_body_hash() {
        use crate::policy::EventKey;
        let spec = EventKey::first_of(&[
            &["/reply_message/message_id", "/event_type"],
            &["/reply_message/message_id", "/event"],
            &["/stats_id", "/event_type"],
            &["/stats_id", "/event"],
        ]);
        let key = |v: Value| find_event_key(&v, v.to_string().as_bytes(), &spec).map(|(k, _)| k);
        let reply = serde_json::json!({"event_type": "EMAIL_REPLY", "stats_id": "s1", "reply_message": {"message_id": "<m1@x>"}});
        assert_eq!(key(reply).as_deref(), Some("<m1@x>:EMAIL_REPLY"));
        // The older spelling: `event` instead of `event_type`.
        let old = serde_json::json!({"event": "EMAIL_REPLIED", "reply_message": {"message_id": "<m1@x>"}});
        assert_eq!(key(old).as_deref(), Some("<m1@x>:EMAIL_REPLIED"));
        // No message id (opens, clicks): the stats id; a null counts as absent.
        let open = serde_json::json!({"event_type": "EMAIL_OPEN", "stats_id": "s9", "reply_message": {"message_id": null}});
        assert_eq!(key(open).as_deref(), Some("s9:EMAIL_OPEN"));
        // Nothing identifying: the hash of the exact bytes, the same for the same bytes.
        let raw = br#"{"event_type":"EMAIL_LINK_CLICK","campaign_id":7}"#;
        let v: Value = serde_json::from_slice(raw).unwrap();
        let (k1, from) = find_event_key(&v, raw, &spec).unwrap();
        assert_eq!(from, None);
        assert_eq!(k1, format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(raw))));
        assert_eq!(find_event_key(&v, raw, &spec).unwrap().0, k1);
        assert_ne!(find_event_key(&v, br#"{"event_type":"EMAIL_LINK_CLICK","campaign_id":8}"#, &spec).unwrap().0, k1);
        // The flat form has no fallback.
        assert_eq!(find_event_key(&v, raw, &EventKey::all_of(&["/id"])), None);
        assert_eq!(find_event_key(&serde_json::json!({"id": 5}), b"", &EventKey::all_of(&["/id"])).map(|(k, _)| k).as_deref(), Some("5"));
    }

    #[test]
    fn event_types_take_the_first_pointer_present() {
        let ptrs = vec!["/event_type".to_string(), "/event".to_string()];
        let v = serde_json::json!({"event": "EMAIL_REPLIED"});
        assert_eq!(event_type(&v, &ptrs), Some(("EMAIL_REPLIED".to_string(), "/event")));
        let v = serde_json::json!({"event_type": "EMAIL_REPLY", "event": "x"});
        assert_eq!(event_type(&v, &ptrs), Some(("EMAIL_REPLY".to_string(), "/event_type")));
        assert_eq!(event_type(&serde_json::json!({"event_type": null}), &ptrs), None);
    }
}
