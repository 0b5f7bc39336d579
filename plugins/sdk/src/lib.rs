//! The plugin SDK: typed wrappers over the `gateway:plugin@0.1.0` bindings, so that a plugin
//! is a page of logic rather than boilerplate.
//!
//! ```ignore
//! use gateway_plugin_sdk::{self as sdk, Request, Response, HandlerError};
//!
//! struct Hello;
//! impl sdk::Guest for Hello {
//!     fn handle(req: Request) -> Result<Response, HandlerError> {
//!         let ctx = sdk::context::get();
//!         sdk::json(200, &serde_json::json!({ "org": ctx.org_id }))
//!     }
//! }
//! sdk::export_plugin!(Hello);
//! ```
//!
//! # Layout
//! - [`bindings`]: what `wit-bindgen` generates from `wit/` (the raw contract).
//! - [`db`]: a query builder over `tenant-db`, with value constructors and filter builders.
//! - [`log`]: one-line logging helpers.
//! - [`encoding`]: hex and UUID text forms.
//! - this file: requests, responses and errors.

pub mod db;
pub mod encoding;
pub mod log;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler",
        default_bindings_module: "gateway_plugin_sdk::bindings",
    });
}

pub use bindings::exports::gateway::plugin::http_handler::Guest;
pub use bindings::gateway::plugin::context;
pub use bindings::gateway::plugin::outbound_http as http;
pub use bindings::gateway::plugin::types::{Header, HandlerError, Problem, Request, Response};
pub use serde_json;

/// Exports a type implementing [`Guest`] as the plugin's handler.
#[macro_export]
macro_rules! export_plugin {
    ($t:ident) => {
        $crate::bindings::__export_handler!($t with_types_in $crate::bindings);
    };
}

impl Request {
    /// A header's value by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value.as_str())
    }

    /// A path parameter by name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Query parameters, percent-decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// A query parameter by name.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A path parameter that must be a UUID: 404 `NOT_FOUND` when it is not one (no row can
    /// have that id), so it is never bound as one (a malformed UUID is a database error).
    pub fn uuid_param(&self, name: &str) -> Result<&str, HandlerError> {
        self.param(name).filter(|v| encoding::is_uuid(v)).ok_or_else(not_found)
    }

    /// A query parameter parsed as `T` (a number, usually), `default` when absent, a 400 for
    /// this field when it does not parse or `ok` refuses it.
    pub fn query_as<T: std::str::FromStr>(&self, name: &str, default: T, ok: impl Fn(&T) -> bool, problem: &str) -> Result<T, HandlerError> {
        match self.query_param(name) {
            None => Ok(default),
            Some(s) => s.parse::<T>().ok().filter(|v| ok(v)).ok_or_else(|| invalid_field(name, problem)),
        }
    }

    /// The body as JSON (the gateway has already checked it parses, for JSON routes).
    pub fn json_value(&self) -> Result<serde_json::Value, HandlerError> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| invalid(&format!("body is not JSON: {e}")))
    }

    /// The body deserialized into `T`; a mismatch is a 400 `VALIDATION_FAILED`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.body).map_err(|e| invalid(&format!("body does not fit: {e}")))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON response.
pub fn json(status: u16, body: &impl serde::Serialize) -> Result<Response, HandlerError> {
    let body = serde_json::to_vec(body).map_err(|e| failed(&e.to_string()))?;
    Ok(Response {
        status,
        headers: vec![Header { name: "content-type".into(), value: "application/json".into() }],
        body,
    })
}

fn problem(code: Option<&str>, message: &str, details: Option<serde_json::Value>) -> Problem {
    Problem {
        code: code.map(str::to_string),
        message: message.to_string(),
        details: details.map(|d| d.to_string()),
    }
}

/// 400 `VALIDATION_FAILED`.
pub fn invalid(message: &str) -> HandlerError {
    HandlerError::Invalid(problem(None, message, None))
}

/// 400 `VALIDATION_FAILED` with a `details` document.
pub fn invalid_with(message: &str, details: serde_json::Value) -> HandlerError {
    HandlerError::Invalid(problem(None, message, Some(details)))
}

/// 400 `VALIDATION_FAILED` for one field: `details` is `[{"field", "problem"}]`, the shape
/// [`Problems`] builds for several.
pub fn invalid_field(field: &str, problem: &str) -> HandlerError {
    invalid_with("request failed validation", serde_json::json!([{ "field": field, "problem": problem }]))
}

/// Every validation problem of a request, reported at once: 400 `VALIDATION_FAILED` with
/// `details: [{"field", "problem"}, …]` in the order found.
///
/// ```ignore
/// let mut p = sdk::Problems::new();
/// let title = p.text(&body, "title", 1..=200);
/// p.check(limit <= 100, "limit", "must be at most 100");
/// p.finish()?; // Err(400) when any problem was found
/// ```
#[derive(Debug, Default)]
pub struct Problems(Vec<(String, String)>);

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }
    /// Records a problem with `field`.
    pub fn add(&mut self, field: &str, problem: &str) {
        self.0.push((field.to_string(), problem.to_string()));
    }
    /// Records `problem` unless `ok`; returns `ok`.
    pub fn check(&mut self, ok: bool, field: &str, problem: &str) -> bool {
        if !ok {
            self.add(field, problem);
        }
        ok
    }
    /// `body[field]` as trimmed text whose length (in characters) is within `len`; records a
    /// problem (missing, not text, too short or too long) and returns `None` otherwise.
    pub fn text(&mut self, body: &serde_json::Value, field: &str, len: std::ops::RangeInclusive<usize>) -> Option<String> {
        match body.get(field) {
            None | Some(serde_json::Value::Null) => {
                self.add(field, "is required");
                None
            }
            Some(serde_json::Value::String(s)) => {
                let t = s.trim();
                let n = t.chars().count();
                if n < *len.start() {
                    self.add(field, if *len.start() <= 1 { "must not be empty".to_string() } else { format!("must be at least {} characters", len.start()) }.as_str());
                    None
                } else if n > *len.end() {
                    self.add(field, &format!("must be at most {} characters", len.end()));
                    None
                } else {
                    Some(t.to_string())
                }
            }
            Some(_) => {
                self.add(field, "must be text");
                None
            }
        }
    }
    /// A UUID in text form (`value` from a path or query parameter or a body field), or a
    /// problem. Check a UUID before binding it: a malformed one is a database error, which
    /// aborts the invocation.
    pub fn uuid<'a>(&mut self, value: Option<&'a str>, field: &str) -> Option<&'a str> {
        match value {
            Some(v) if encoding::is_uuid(v) => Some(v),
            Some(_) => {
                self.add(field, "must be a UUID");
                None
            }
            None => {
                self.add(field, "is required");
                None
            }
        }
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok(())` when nothing was recorded, else the 400 with every problem.
    pub fn finish(self) -> Result<(), HandlerError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let details: Vec<serde_json::Value> =
            self.0.into_iter().map(|(field, problem)| serde_json::json!({ "field": field, "problem": problem })).collect();
        Err(invalid_with("request failed validation", serde_json::Value::Array(details)))
    }
}

/// 403 with a specific code, e.g. `UNAUTHORIZED_BUSINESS`.
pub fn forbidden(code: &str, message: &str) -> HandlerError {
    HandlerError::Forbidden(problem(Some(code), message, None))
}

/// 404 `NOT_FOUND`.
pub fn not_found() -> HandlerError {
    HandlerError::NotFound("not found".into())
}

/// 409 with a specific code, e.g. `IDEMPOTENCY_IN_FLIGHT`.
pub fn conflict(code: &str, message: &str) -> HandlerError {
    HandlerError::Conflict(problem(Some(code), message, None))
}

/// 422 with a specific code, e.g. `IDEMPOTENCY_KEY_REUSED`.
pub fn unprocessable(code: &str, message: &str) -> HandlerError {
    HandlerError::Unprocessable(problem(Some(code), message, None))
}

/// 502 `PLUGIN_FAILED`.
pub fn failed(message: &str) -> HandlerError {
    HandlerError::Failed(message.to_string())
}
