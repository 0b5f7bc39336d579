//! Phase 4: hand the checked request to its target: a native handler or (with the plugin
//! runtime) a WebAssembly plugin.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use crate::error::{ApiError, Code};
use crate::native;
use crate::phases::guard::Caller;
use crate::policy::{Route, Target};
use crate::state::AppState;

/// A request that passed the guards.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub route: &'a Route,
    pub params: Vec<(String, String)>,
    pub caller: Caller,
    pub request_id: &'a str,
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Option<Value>,
    /// Set on webhook routes, after the `verify` phase accepted the signature.
    pub verified: Option<super::verify::Verified>,
}

impl Call<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A query-string value (`?name=value`; `Some("")` for a bare `?name`). Not
    /// percent-decoded: native routes take plain tokens only.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if kv == name => Some(""),
            _ => None,
        })
    }
}

/// A successful answer, before the wire format is applied.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: StatusCode, v: Value) -> Reply {
        Reply {
            status,
            content_type: HeaderValue::from_static("application/json"),
            headers: Vec::new(),
            body: Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        }
    }
    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            content_type: HeaderValue::from_static("application/json"),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

pub async fn dispatch(call: Call<'_>) -> Result<Reply, ApiError> {
    match &call.route.target {
        Target::Native(name) => native::call(name, call).await,
        Target::Plugin(name) => plugin(name, call).await,
    }
}

pub async fn readyz(state: &AppState) -> Result<Reply, ApiError> {
    crate::db::ping(&state.pool).await?;
    Ok(Reply::json(StatusCode::OK, serde_json::json!({"ready": true, "routes": state.policies().routes.len()})))
}

async fn plugin(name: &str, call: Call<'_>) -> Result<Reply, ApiError> {
    use crate::plugin::bindings::types::{Header, Request};
    let Some(loaded) = call.state.plugin(name) else {
        return Err(ApiError::new(Code::Unavailable, format!("plugin {name:?} is not loaded")));
    };
    let org = call.caller.org.ok_or_else(|| ApiError::new(Code::Internal, "plugin route without an org"))?;
    let headers = call
        .headers
        .iter()
        .filter(|(k, _)| *k != http::header::AUTHORIZATION)
        .map(|(k, v)| Header { name: k.as_str().to_string(), value: String::from_utf8_lossy(v.as_bytes()).into_owned() })
        .collect();
    let request = Request {
        method: call.method.as_str().to_string(),
        path: call.path.clone(),
        params: call.params.clone(),
        query: call.query.clone().unwrap_or_default(),
        headers,
        body: call.body.to_vec(),
    };
    let inv = crate::plugin::Invocation {
        route: call.route,
        pool: &call.state.pool,
        schema: call.state.schema.clone(),
        org,
        user: call.caller.user,
        role: call.caller.role,
        request_id: call.request_id,
        request,
        before_commit: None,
    };
    call.state.runtime.invoke(&loaded, inv).await
}
