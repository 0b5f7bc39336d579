//! Phase 4 (webhook routes only): the signature, checked over the raw body as bytes before
//! anything parses it, against every active secret of the endpoint the guard resolved.
//!
//! Schemes: Standard Webhooks, a provider's hex HMAC header, Smartlead (its header or the
//! body's `secret_key`), a `?secret=` token in the URL. Every failure is the same 401 `INVALID_SIGNATURE`; an authentic Standard Webhooks delivery
//! outside the replay window is 401 `STALE_WEBHOOK`.

use http::HeaderMap;

use crate::error::{ApiError, Code};
use crate::phases::guard::Caller;
use crate::policy::PolicySet;
use crate::webhooks::verify::{self, Rejection};
use crate::webhooks::Scheme;

/// What a verified delivery proved.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `webhook-id` for Standard Webhooks; provider schemes take theirs from the body.
    pub webhook_id: Option<String>,
}

/// `query` is the delivery URL's query string (`url-token`): it is compared, never logged.
pub fn check(
    policies: &PolicySet,
    metrics: &crate::metrics::Metrics,
    caller: &Caller,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Option<Verified>, ApiError> {
    let Some(endpoint) = &caller.endpoint else { return Ok(None) };
    let now = chrono::Utc::now();
    let keys = endpoint.active_keys(now);
    let outcome = match endpoint.scheme {
        Scheme::StandardWebhooks => verify::standard(&keys, headers, body, now.timestamp()).map(|id| Some(id.to_string())),
        // The header name comes from the provider's policy; an endpoint whose provider was
        // removed from the policies (or signs with Standard Webhooks only) cannot verify.
        Scheme::HmacSha256 => match policies.providers.get(&endpoint.provider).and_then(|p| p.signature_header.as_deref()) {
            Some(header) => verify::hmac_hex(&keys, headers, header, body).map(|()| None),
            None => {
                tracing::error!(endpoint_id = %endpoint.id, provider = %endpoint.provider, "webhook provider has no signature_header in the policies");
                Err(Rejection::Invalid)
            }
        },
        Scheme::Smartlead => verify::smartlead(&keys, headers, body).map(|()| None),
        Scheme::UrlToken => verify::url_token(&keys, query).map(|()| None),
    };
    match outcome {
        Ok(webhook_id) => Ok(Some(Verified { webhook_id })),
        Err(r) => {
            tracing::info!(endpoint_id = %endpoint.id, org_id = %endpoint.org, rejection = ?r, "webhook_rejected");
            let outcome = match r {
                Rejection::Invalid => "invalid_signature",
                Rejection::Stale => "stale",
            };
            metrics.webhook_delivery(&endpoint.provider, outcome);
            Err(match r {
                Rejection::Invalid => ApiError::new(Code::InvalidSignature, "missing or invalid webhook signature"),
                Rejection::Stale => ApiError::new(Code::StaleWebhook, "webhook timestamp outside the 300 s window"),
            })
        }
    }
}
