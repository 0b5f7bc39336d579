//! What both fakes share: the HTTP server, the call log, injected faults and the webhook
//! sender.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Error;

/// One call as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter, as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        query_param(self.query.as_deref(), name)
    }
}

pub(crate) fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// An answer the fake gives instead of serving a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    RateLimited { retry_after_secs: u64 },
    /// A server error (500, 502, 503…).
    Status(u16),
}

/// An answer of the fake's own API.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(status: u16, v: Value) -> Answer {
        Answer { status, headers: vec![("content-type", "application/json".into())], body: v.to_string().into_bytes() }
    }
    pub fn empty(status: u16) -> Answer {
        Answer { status, headers: vec![], body: vec![] }
    }
}

/// Shared by both fakes: the key, the log and the fault queue.
pub(crate) struct Core {
    pub api_key: String,
    pub calls: Mutex<Vec<Recorded>>,
    pub faults: Mutex<VecDeque<Fault>>,
}

impl Core {
    pub fn new(api_key: &str) -> Core {
        Core { api_key: api_key.to_string(), calls: Mutex::default(), faults: Mutex::default() }
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut q = self.faults.lock().unwrap();
        q.extend(std::iter::repeat_n(fault, n));
    }

    /// Records the call and answers with the next injected fault, if any.
    pub fn record(&self, call: &Recorded) -> Option<Answer> {
        self.calls.lock().unwrap().push(call.clone());
        let fault = self.faults.lock().unwrap().pop_front()?;
        Some(match fault {
            Fault::RateLimited { retry_after_secs } => Answer {
                status: 429,
                headers: vec![("retry-after", retry_after_secs.to_string()), ("content-type", "application/json".into())],
                body: br#"{"message":"Too Many Requests"}"#.to_vec(),
            },
            Fault::Status(s) => Answer::json(s, serde_json::json!({"message": "Internal Server Error"})),
        })
    }
}

/// A fake's API: every request, read whole.
pub(crate) trait Api: Send + Sync + 'static {
    fn handle(self: Arc<Self>, call: Recorded) -> Pin<Box<dyn Future<Output = Answer> + Send>>;
}

/// Serves `api` on `addr` until the returned task is aborted.
pub(crate) async fn serve<A: Api>(addr: &str, api: Arc<A>) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr: addr.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| Error::Bind { addr: addr.to_string(), source })?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let api = api.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let api = api.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        let call = Recorded {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().map(str::to_string),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                                .collect(),
                            body,
                        };
                        let answer = api.handle(call).await;
                        let mut resp = hyper::Response::builder().status(answer.status);
                        for (k, v) in answer.headers {
                            resp = resp.header(k, v);
                        }
                        Ok::<_, std::convert::Infallible>(resp.body(Full::new(Bytes::from(answer.body))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((local, task))
}

/// What a webhook delivery got back.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub status: u16,
    pub body: String,
}

/// POSTs a webhook body to `url` (plain `http://`: the gateway on loopback).
pub(crate) async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<Delivered, Error> {
    let fail = |reason: String| Error::Deliver { url: url.to_string(), reason };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| fail(e.to_string()))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| fail("no answer within 30 s".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(Delivered { status, body: String::from_utf8_lossy(&body).into_owned() })
}

/// An ISO-8601 UTC timestamp of now, as both providers write them.
pub(crate) fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The body of a call to the fake's control API, or an empty object.
pub(crate) fn control_body(call: &Recorded) -> Value {
    match call.json() {
        Value::Null => Value::Object(Default::default()),
        v => v,
    }
}
