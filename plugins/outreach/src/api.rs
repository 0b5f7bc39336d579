//! Calls to the provider through `outbound-http`, and what their answers mean for the job.
//!
//! The plugin never holds the API key: URLs are built from the job's `base_url` alone, and
//! the host adds the org's credential (a query parameter or a header, per the route's
//! `credentials` grant) when the request goes to that exact origin.

use gateway_plugin_sdk::http::{self, HttpError, OutgoingRequest};
use gateway_plugin_sdk::serde_json::{self, Value as J};
use gateway_plugin_sdk::{Header, HandlerError};

use crate::text;

/// Why a provider call did not give an answer to use.
#[derive(Debug)]
pub enum CallError {
    /// Refused for good: recorded on the job's target as `<code>: [<status> ]<reason>`, and
    /// the job finishes (200).
    Rejected { code: &'static str, status: Option<u16>, reason: String },
    /// The provider (or the host's pacing) said to wait this many seconds: answer 429 with
    /// `retry-after` so the host reschedules the job without using an attempt.
    RateLimited(u32),
    /// 5xx, connect failure, timeout: a failed attempt, retried with backoff.
    Unavailable(String),
    /// The plugin cannot do its job (configuration, a malformed answer): a failed attempt.
    Failed(String),
    /// A database failure: ends the invocation as the SDK maps it.
    Db(HandlerError),
}

impl CallError {
    pub fn rejected(status: u16, reason: &str) -> CallError {
        CallError::Rejected { code: "PROVIDER_REJECTED", status: Some(status), reason: reason.to_string() }
    }

    pub fn unsupported(reason: &str) -> CallError {
        CallError::Rejected { code: "PROVIDER_UNSUPPORTED", status: None, reason: reason.to_string() }
    }

    /// The `sync_error` / `reason` text of a refusal (at most 500 bytes, the columns' limit).
    pub fn sync_error(&self) -> Option<String> {
        match self {
            CallError::Rejected { code, status: Some(s), reason } => Some(text::cut(&format!("{code}: {s} {reason}"), 500)),
            CallError::Rejected { code, status: None, reason } => Some(text::cut(&format!("{code}: {reason}"), 500)),
            _ => None,
        }
    }
}

impl From<gateway_plugin_sdk::db::DbError> for CallError {
    fn from(e: gateway_plugin_sdk::db::DbError) -> CallError {
        CallError::Db(e.into())
    }
}

impl From<HandlerError> for CallError {
    fn from(e: HandlerError) -> CallError {
        CallError::Db(e)
    }
}

/// Longest wait a provider's `retry-after` is taken at (an hour); longer is capped.
const MAX_RETRY_AFTER: u32 = 3600;
/// The wait when a 429 names none.
pub const DEFAULT_RETRY_AFTER: u32 = 30;

/// What an answer means: 2xx is its JSON body (`null` when empty or not JSON), 429 a wait,
/// 5xx unavailable, anything else a refusal.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Result<J, CallError> {
    match status {
        200..=299 => Ok(serde_json::from_slice(body).unwrap_or(J::Null)),
        429 => Err(CallError::RateLimited(
            retry_after
                .and_then(|v| v.trim().parse::<u32>().ok())
                .map(|s| s.clamp(1, MAX_RETRY_AFTER))
                .unwrap_or(DEFAULT_RETRY_AFTER),
        )),
        500..=599 => Err(CallError::Unavailable(format!("provider answered {status}"))),
        _ => Err(CallError::rejected(status, &text::reason(body))),
    }
}

/// The provider's API at one base URL (from the job; never carrying a credential).
#[derive(Debug)]
pub struct Api {
    base: String,
}

impl Api {
    /// Checks `base_url` is an absolute http(s) URL without credentials, query or fragment.
    pub fn new(base_url: &str) -> Result<Api, String> {
        let rest = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"))
            .ok_or("base_url must be an absolute http(s) URL")?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err("base_url must name a host and carry no credentials".into());
        }
        if base_url.contains(['?', '#']) || base_url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("base_url must have no query, fragment or spaces".into());
        }
        Ok(Api { base: base_url.trim_end_matches('/').to_string() })
    }

    /// `base` + `path` (which starts with `/`) + the query pairs (values percent-encoded).
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&text::query_value(v));
        }
        url
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<J, CallError> {
        self.send("GET", path, query, None)
    }

    pub fn post(&self, path: &str, query: &[(&str, &str)], body: &J) -> Result<J, CallError> {
        self.send("POST", path, query, Some(body))
    }

    fn send(&self, method: &str, path: &str, query: &[(&str, &str)], body: Option<&J>) -> Result<J, CallError> {
        let mut headers = vec![Header { name: "accept".into(), value: "application/json".into() }];
        if body.is_some() {
            headers.push(Header { name: "content-type".into(), value: "application/json".into() });
        }
        let req = OutgoingRequest {
            method: method.into(),
            url: self.url(path, query),
            headers,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        };
        match http::send(&req) {
            Ok(resp) => {
                let retry_after = resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case("retry-after")).map(|h| h.value.as_str());
                classify(resp.status, retry_after, &resp.body)
            }
            Err(HttpError::Timeout) => Err(CallError::Unavailable("provider timed out".into())),
            Err(HttpError::ConnectFailed(_)) => Err(CallError::Unavailable("provider unreachable".into())),
            Err(HttpError::DnsFailed(_)) => Err(CallError::Unavailable("provider host did not resolve".into())),
            Err(HttpError::Protocol(_)) => Err(CallError::Unavailable("provider answer was not valid HTTP".into())),
            Err(HttpError::NotAllowed(_)) => Err(CallError::Failed("the route's grants do not allow the provider's origin".into())),
            Err(HttpError::ForbiddenAddress(_)) => Err(CallError::Failed("the provider's address is not reachable from plugins".into())),
            Err(HttpError::InvalidRequest(m)) => Err(CallError::Failed(format!("invalid provider request: {}", text::cut(&m, 200)))),
            Err(HttpError::ResponseTooLarge(n)) => Err(CallError::Failed(format!("provider answer over the {n}-byte cap"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plugin_sdk::serde_json::json;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, None, br#"{"id":3}"#).unwrap(), json!({"id": 3}));
        assert_eq!(classify(204, None, b"").unwrap(), J::Null);
        assert!(matches!(classify(429, Some("7"), b""), Err(CallError::RateLimited(7))));
        assert!(matches!(classify(429, None, b""), Err(CallError::RateLimited(30))));
        assert!(matches!(classify(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b""), Err(CallError::RateLimited(30))));
        assert!(matches!(classify(429, Some("999999"), b""), Err(CallError::RateLimited(3600))));
        assert!(matches!(classify(503, None, b""), Err(CallError::Unavailable(_))));
        let e = classify(400, None, br#"{"message":"name is required"}"#).unwrap_err();
        assert_eq!(e.sync_error().as_deref(), Some("PROVIDER_REJECTED: 400 name is required"));
        assert_eq!(classify(302, None, b"").unwrap_err().sync_error().as_deref(), Some("PROVIDER_REJECTED: 302 "));
        assert_eq!(CallError::unsupported("no").sync_error().as_deref(), Some("PROVIDER_UNSUPPORTED: no"));
    }

    #[test]
    fn urls_never_carry_more_than_asked() {
        let api = Api::new("https://server.smartlead.ai/api/v1/").unwrap();
        assert_eq!(api.url("/campaigns", &[]), "https://server.smartlead.ai/api/v1/campaigns");
        assert_eq!(api.url("/leads/", &[("email", "a+b@x.io")]), "https://server.smartlead.ai/api/v1/leads/?email=a%2Bb%40x.io");
        assert_eq!(api.url("/email-accounts/", &[("offset", "0"), ("limit", "100")]), "https://server.smartlead.ai/api/v1/email-accounts/?offset=0&limit=100");
        for bad in ["ftp://x", "https://", "https://u:p@x.io", "https://x.io/?api_key=1", "https://x.io/#f", "x.io", "https://x .io"] {
            assert!(Api::new(bad).is_err(), "{bad}");
        }
        assert!(Api::new("http://127.0.0.1:9000/api/public").is_ok());
    }
}
