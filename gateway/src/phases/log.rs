//! Phase 6: one access line per request, whichever phase ended it. Fields: request id, method,
//! route id (not the raw path or query, which may carry identifiers), org, role, status,
//! latency. Tokens, emails and bodies are never logged.

use std::time::Duration;

use http::Request;
use uuid::Uuid;

use crate::role::Role;

pub struct Entry {
    pub request_id: String,
    pub method: http::Method,
    pub route: Option<String>,
    pub org: Option<Uuid>,
    pub role: Option<Role>,
    pub status: u16,
}

impl Entry {
    pub fn new<B>(request_id: String, req: &Request<B>) -> Entry {
        Entry { request_id, method: req.method().clone(), route: None, org: None, role: None, status: 0 }
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
        latency_us = latency.as_micros() as u64,
        "request"
    );
}
