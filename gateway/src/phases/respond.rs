//! Phase 5: the wire format. Every response carries `x-request-id`; every error is
//! `{"error", "error_code", "request_id"[, "details"]}` as `application/json`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Full;
use serde_json::json;

use crate::error::ApiError;
use crate::phases::Reply;

/// The caller's `x-request-id` when it is short and plain, else a fresh one.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return v.to_string();
        }
    }
    uuid::Uuid::new_v4().simple().to_string()
}

/// An error as clients see it (also what contract fixtures are matched against).
pub fn error_json(e: &ApiError, request_id: &str) -> serde_json::Value {
    let mut v = json!({ "error": e.message, "error_code": e.code_str(), "request_id": request_id });
    if let Some(d) = &e.details {
        v["details"] = d.clone();
    }
    for (name, value) in e.fields.iter().flat_map(|f| f.iter()) {
        v[name.as_str()] = value.clone();
    }
    v
}

pub fn error_body(e: &ApiError, request_id: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(&error_json(e, request_id)).unwrap_or_default())
}

pub fn finish(reply: Result<Reply, ApiError>, request_id: &str) -> Response<Full<Bytes>> {
    let mut resp = match reply {
        Ok(r) => {
            let mut resp = Response::new(Full::new(r.body));
            *resp.status_mut() = r.status;
            let h = resp.headers_mut();
            h.insert(http::header::CONTENT_TYPE, r.content_type);
            for (k, v) in r.headers {
                h.append(k, v);
            }
            resp
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(error_body(&e, request_id)));
            *resp.status_mut() = e.code.status();
            let h = resp.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            for (k, v) in e.headers {
                h.append(k, v);
            }
            resp.extensions_mut().insert(ErrorCode(e.code.as_str()));
            resp
        }
    };
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Marks an error response with its code, for the access log.
#[derive(Clone, Copy)]
pub struct ErrorCode(pub &'static str);
