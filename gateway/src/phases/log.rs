//! Phase 6: one access line per request, whichever phase ended it. Fields: request id, method,
//! route id (not the raw path or query, which may carry identifiers), org, role, status,
//! error code, latency. Tokens, emails and bodies are never logged. A request hyper could not
//! parse (and answered itself) gets a line too, from the connection (`unparsed`).

use std::time::Duration;

use http::Request;
use uuid::Uuid;

use crate::role::Role;

pub struct Entry {
    pub request_id: String,
    pub method: http::Method,
    pub route: Option<std::sync::Arc<str>>,
    pub org: Option<Uuid>,
    pub role: Option<Role>,
    pub status: u16,
    pub error_code: Option<&'static str>,
}

impl Entry {
    pub fn new<B>(request_id: String, req: &Request<B>) -> Entry {
        Entry { request_id, method: req.method().clone(), route: None, org: None, role: None, status: 0, error_code: None }
    }
}

pub fn emit(e: &Entry, latency: Duration) {
    tracing::info!(
        target: "gateway::access",
        request_id = %e.request_id,
        method = %e.method,
        route = e.route.as_deref().unwrap_or("-"),
        org_id = %e.org.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
        role = e.role.map(Role::as_str).unwrap_or("-"),
        status = e.status,
        error_code = e.error_code.unwrap_or("-"),
        latency_us = latency.as_micros() as u64,
        "request"
    );
}

/// The access line of a request hyper refused before the pipeline saw it: nothing of it is
/// known but how it failed (the client's `x-request-id` was never parsed).
pub fn unparsed(request_id: &str, status: u16, error_code: &'static str, reason: &str, latency: Duration) {
    tracing::info!(
        target: "gateway::access",
        request_id,
        method = "-",
        route = "-",
        org_id = "-",
        role = "-",
        status,
        error_code,
        reason,
        latency_us = latency.as_micros() as u64,
        "request"
    );
}
