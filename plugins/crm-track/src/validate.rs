//! Input validation for `POST /v1/crm/track`: every problem is reported at once as
//! `details`, and nothing is written when there is one.

use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError};

pub struct Identity {
    pub kind: &'static str,
    pub value: String,
}

pub struct Track {
    pub kind: String,
    pub props: Map<String, J>,
    /// In resolution priority order: external_id, email, phone.
    pub identities: Vec<Identity>,
    pub name: Option<String>,
    pub business_id: Option<String>,
    pub idem_key: Option<String>,
}

const MAX_TYPE: usize = 100;
const MAX_PROPS_BYTES: usize = 32 * 1024;

pub fn normalise_email(e: &str) -> Option<String> {
    let e = e.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && local.len() <= 64
        && e.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !e.contains(char::is_whitespace)
        && !domain.contains('@');
    ok.then_some(e)
}

/// `^\+?[1-9]\d{6,15}$` (seed 001), after removing spaces, dashes, dots and parentheses.
pub fn normalise_phone(p: &str) -> Option<String> {
    let p: String = p.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = p.strip_prefix('+').unwrap_or(&p);
    let ok = (7..=16).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(p)
}

pub fn track(body: &J, header_key: Option<String>) -> Result<Track, HandlerError> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, what: &str| problems.push(json!({ "field": field, "problem": what }));
    let Some(obj) = body.as_object() else {
        return Err(sdk::invalid_with("request failed validation", json!([{"field": "body", "problem": "must be a JSON object"}])));
    };
    let kind = match obj.get("type") {
        Some(J::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_TYPE => s.trim().to_string(),
        Some(J::String(s)) if s.trim().is_empty() => {
            problem("type", "must not be empty");
            String::new()
        }
        Some(J::String(_)) => {
            problem("type", "must be at most 100 characters");
            String::new()
        }
        _ => {
            problem("type", "is required and must be a string");
            String::new()
        }
    };
    let props = match obj.get("props") {
        None | Some(J::Null) => Map::new(),
        Some(J::Object(m)) => {
            if J::Object(m.clone()).to_string().len() > MAX_PROPS_BYTES {
                problem("props", "must be at most 32 KiB");
            }
            m.clone()
        }
        Some(_) => {
            problem("props", "must be an object");
            Map::new()
        }
    };
    let mut identities = Vec::new();
    let mut name = None;
    match obj.get("contact") {
        Some(J::Object(c)) => {
            let field = |k: &str| c.get(k).filter(|v| !v.is_null());
            if let Some(v) = field("external_id") {
                match v.as_str().map(str::trim) {
                    Some(s) if !s.is_empty() && s.len() <= 200 => identities.push(Identity { kind: "external_id", value: s.to_string() }),
                    _ => problem("contact.external_id", "must be a non-empty string of at most 200 characters"),
                }
            }
            if let Some(v) = field("email") {
                match v.as_str().and_then(normalise_email) {
                    Some(e) => identities.push(Identity { kind: "email", value: e }),
                    None => problem("contact.email", "must be an email address"),
                }
            }
            if let Some(v) = field("phone") {
                match v.as_str().and_then(normalise_phone) {
                    Some(p) => identities.push(Identity { kind: "phone", value: p }),
                    None => problem("contact.phone", "must match ^\\+?[1-9]\\d{6,15}$"),
                }
            }
            if let Some(v) = field("name") {
                match v.as_str().map(str::trim) {
                    Some(s) if s.chars().count() <= 200 => name = (!s.is_empty()).then(|| s.to_string()),
                    _ => problem("contact.name", "must be a string of at most 200 characters"),
                }
            }
            if identities.is_empty() && !c.keys().any(|k| ["external_id", "email", "phone"].contains(&k.as_str())) {
                problem("contact", "needs at least one of external_id, email, phone");
            }
        }
        Some(_) => problem("contact", "must be an object"),
        None => problem("contact", "is required (with at least one of external_id, email, phone)"),
    }
    let business_id = match obj.get("business_id").or_else(|| props.get("business_id")) {
        None | Some(J::Null) => None,
        Some(J::String(s)) => Some(s.clone()),
        Some(_) => {
            problem("business_id", "must be a UUID string");
            None
        }
    };
    let body_key = props.get("idemKey").cloned();
    let idem_key = match (header_key, body_key) {
        (Some(h), _) => Some(h),
        (None, Some(J::String(k))) => Some(k),
        (None, Some(_)) => {
            problem("props.idemKey", "must be a string");
            None
        }
        (None, None) => None,
    };
    if let Some(k) = &idem_key {
        if k.is_empty() || k.len() > 200 || k.chars().any(char::is_control) {
            problem("Idempotency-Key", "must be 1 to 200 printable characters");
        }
    }
    if !problems.is_empty() {
        return Err(sdk::invalid_with("request failed validation", J::Array(problems)));
    }
    Ok(Track { kind, props, identities, name, business_id, idem_key })
}
