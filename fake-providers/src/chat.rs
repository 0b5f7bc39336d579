//! Fake OpenAI-compatible chat completions (`https://api.openai.com/v1`): the optimizer's
//! language model.
//!
//! Served: `POST /v1/chat/completions` with `authorization: Bearer <key>` (401 otherwise, in
//! OpenAI's error shape), answering `{"id", "object": "chat.completion", "created", "model",
//! "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason":
//! "stop"}], "usage"}`. The content is the one set with [`FakeChat::set_content`], or by
//! default a deterministic proposal computed from the request: the user message is read as
//! the optimizer's JSON (`{"steps": [{"seq_number", "subject", "sent", "opened", …}]}`) and
//! the step with the lowest open rate (of those with sends; the first on a tie) gets a new
//! subject. [`FakeChat::echo_authorization`] puts the `authorization` header it received into
//! the rationale, so a test can see what the caller's plugin was shown of it. Control API:
//! `GET /_fake/calls`, `POST /_fake/fail {"n", "status"}` (status 429: rate limited).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::core::{self, control_body, Answer, Api, Core, Fault, Recorded};
use crate::smartlead::calls_json;
use crate::Error;

pub const PREFIX: &str = "/v1";

struct Inner {
    core: Core,
    content: Mutex<Option<String>>,
    echo_authorization: AtomicBool,
}

/// A running fake chat-completions API; stops when dropped.
pub struct FakeChat {
    inner: Arc<Inner>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeChat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeChat {
    pub async fn start(api_key: &str) -> Result<FakeChat, Error> {
        FakeChat::start_on("127.0.0.1:0", api_key).await
    }

    pub async fn start_on(addr: &str, api_key: &str) -> Result<FakeChat, Error> {
        let inner = Arc::new(Inner { core: Core::new(api_key), content: Mutex::new(None), echo_authorization: AtomicBool::new(false) });
        let (addr, task) = core::serve(addr, inner.clone()).await?;
        Ok(FakeChat { inner, addr, task })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/v1`: an org's `base_url` for provider `openai`.
    pub fn base_url(&self) -> String {
        format!("http://{}{PREFIX}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.core.api_key
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.inner.core.calls.lock().unwrap().clone()
    }

    pub fn clear_calls(&self) {
        self.inner.core.calls.lock().unwrap().clear();
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.inner.core.fail_next(n, fault);
    }

    /// The completion's content from now on; `None`: the default proposal.
    pub fn set_content(&self, content: Option<&str>) {
        *self.inner.content.lock().unwrap() = content.map(str::to_string);
    }

    /// Whether the default proposal's rationale quotes the `authorization` header received.
    pub fn echo_authorization(&self, on: bool) {
        self.inner.echo_authorization.store(on, Ordering::SeqCst);
    }
}

/// The default answer: a new subject for the step with the lowest open rate, or no
/// proposals when the request names no step with sends.
pub fn default_content(request: &Value, authorization: Option<&str>) -> String {
    let user = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .unwrap_or(Value::Null);
    let steps = user["steps"].as_array().cloned().unwrap_or_default();
    let mut lowest: Option<(f64, &Value)> = None;
    for s in &steps {
        let sent = s["sent"].as_i64().unwrap_or(0);
        if sent <= 0 {
            continue;
        }
        let rate = s["opened"].as_i64().unwrap_or(0) as f64 / sent as f64;
        if lowest.is_none_or(|(r, _)| rate < r) {
            lowest = Some((rate, s));
        }
    }
    let Some((rate, step)) = lowest else {
        return json!({"proposals": []}).to_string();
    };
    let seq = step["seq_number"].as_i64().unwrap_or(1);
    let mut rationale = format!(
        "fake model: step {seq} has the lowest open rate ({:.0}%, {} of {} sends)",
        rate * 100.0,
        step["opened"].as_i64().unwrap_or(0),
        step["sent"].as_i64().unwrap_or(0)
    );
    if let Some(a) = authorization {
        rationale.push_str(&format!("; authorization seen: {a}"));
    }
    json!({"proposals": [{
        "seq_number": seq,
        "optimization_type": "update_subject",
        "new_value": format!("Model subject for step {seq}"),
        "summary": format!("Model: new subject for step {seq}"),
        "rationale": rationale,
    }]})
    .to_string()
}

impl Inner {
    fn control(&self, call: &Recorded) -> Answer {
        let b = control_body(call);
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", "/_fake/calls") => Answer::json(200, calls_json(&self.core.calls.lock().unwrap())),
            ("POST", "/_fake/fail") => {
                let n = b["n"].as_u64().unwrap_or(1) as usize;
                let fault = match b["status"].as_u64().unwrap_or(503) {
                    429 => Fault::RateLimited { retry_after_secs: b["retry_after"].as_u64().unwrap_or(20) },
                    s => Fault::Status(s as u16),
                };
                self.core.fail_next(n, fault);
                Answer::json(200, json!({"queued": n}))
            }
            _ => Answer::json(404, json!({"message": "unknown control call"})),
        }
    }

    fn api(&self, call: &Recorded) -> Answer {
        let expected = format!("Bearer {}", self.core.api_key);
        if call.header("authorization") != Some(expected.as_str()) {
            return Answer::json(
                401,
                json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
            );
        }
        if (call.method.as_str(), call.path.as_str()) != ("POST", "/v1/chat/completions") {
            return Answer::json(404, json!({"error": {"message": "Unknown request URL", "type": "invalid_request_error", "code": "unknown_url"}}));
        }
        let req = call.json();
        if !req["messages"].is_array() || req["model"].as_str().is_none_or(str::is_empty) {
            return Answer::json(400, json!({"error": {"message": "'model' and 'messages' are required", "type": "invalid_request_error", "code": null}}));
        }
        let content = match self.content.lock().unwrap().clone() {
            Some(c) => c,
            None => default_content(&req, self.echo_authorization.load(Ordering::SeqCst).then(|| call.header("authorization")).flatten()),
        };
        Answer::json(
            200,
            json!({
                "id": format!("chatcmpl-fake-{}", self.core.calls.lock().unwrap().len()),
                "object": "chat.completion",
                "created": chrono::Utc::now().timestamp(),
                "model": req["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }),
        )
    }
}

impl Api for Inner {
    fn handle(self: Arc<Self>, call: Recorded) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async move {
            if call.path.starts_with("/_fake/") {
                return self.control(&call);
            }
            if let Some(fault) = self.core.record(&call) {
                return fault;
            }
            self.api(&call)
        })
    }
}
