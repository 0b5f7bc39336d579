//! Contract fixtures a plugin ships inside its component, run before an upload is accepted.
//!
//! Fixtures travel with the bytes, in a top-level custom section named
//! [`SECTION`] holding a JSON array (see `docs/plugins.md`):
//!
//! ```json
//! [{"name": "rejects an empty event",
//!   "request": {"method": "POST", "path": "/v1/crm/events", "body": {}},
//!   "expect": {"status": 422, "error_code": "VALIDATION_ERROR"}}]
//! ```
//!
//! Each fixture runs in a fresh instance in the same sandbox as `gateway plugin check`:
//! default limits and **no grants**, so a `tenant-db` or `outbound-http` call is answered
//! `denied` before it touches anything. Fixtures therefore pin down what a plugin decides on
//! its own (validation, routing, pure logic); `expect.body` is matched as a subset (objects
//! may have more keys, arrays must have the same length).
//!
//! Custom sections are ignored by wasmtime, so a component with fixtures runs like one
//! without.
//!
//! The whole run has one time budget ([`BUDGET`]) on top of each fixture's sandbox, and runs
//! on a thread of its own, off the runtime that serves requests: a plugin whose fixtures spin
//! or sleep delays (and fails) only its own upload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::phases::dispatch::plugin_reply;
use crate::plugin::bindings::types::{Header, Request};
use crate::plugin::{Invocation, LoadedPlugin, Runtime, Sandbox};
use crate::role::Role;

/// The name of the custom section that carries fixtures.
pub const SECTION: &str = fixture_section::SECTION;

/// Fixtures beyond this many are refused: an upload must not become a long-running job.
const MAX_FIXTURES: usize = 200;

/// Wall time for all the fixtures of one component together.
pub const BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    pub request: FixtureRequest,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    #[serde(default = "post")]
    pub method: String,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Sent as JSON (with `content-type: application/json` unless a header says otherwise).
    #[serde(default)]
    pub body: Option<Value>,
    /// Sent as these exact bytes instead of `body`.
    #[serde(default)]
    pub raw_body: Option<String>,
}

fn post() -> String {
    "POST".into()
}
fn root() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub error_code: Option<String>,
    /// A JSON subset the response body must contain.
    #[serde(default)]
    pub body: Option<Value>,
}

/// The fixtures embedded in `bytes`, if any. A section that is present but unreadable is
/// an error: a plugin that meant to ship fixtures must not pass by shipping broken ones.
/// Bytes that are not a well-formed binary have none (wasmtime reports that better when it
/// compiles them).
pub fn extract(bytes: &[u8]) -> Result<Option<Vec<Fixture>>> {
    let bad = |reason: String| Error::Plugin { plugin: "-".into(), reason };
    let data = match fixture_section::extract(bytes) {
        Ok(Some(data)) => data,
        Ok(None) | Err(fixture_section::Error::NotWasm | fixture_section::Error::Malformed { .. }) => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let fixtures: Vec<Fixture> =
        serde_json::from_slice(data).map_err(|e| bad(format!("`{SECTION}` section is not valid fixtures JSON: {e}")))?;
    if fixtures.len() > MAX_FIXTURES {
        return Err(bad(format!("{} fixtures; at most {MAX_FIXTURES}", fixtures.len())));
    }
    Ok(Some(fixtures))
}

/// `bytes` with `fixtures_json` as its fixtures section (replacing any there was).
pub fn embed(bytes: &[u8], fixtures_json: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Plugin { plugin: "-".into(), reason };
    // Refuse what `extract` would refuse, at embedding time rather than at upload.
    serde_json::from_slice::<Vec<Fixture>>(fixtures_json).map_err(|e| bad(format!("fixtures: {e}")))?;
    fixture_section::embed(bytes, fixtures_json).map_err(|e| bad(e.to_string()))
}

/// The outcome of one sandboxed request, as a client would see it.
pub struct Observed {
    pub status: u16,
    pub body: Value,
}

/// Runs one request in the no-grant sandbox. `pool` is never used for a query (no grants),
/// it only satisfies the invocation's shape.
pub async fn run_one(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, request: Request) -> Observed {
    let outcome = runtime
        .invoke(
            plugin,
            Invocation {
                label: "sandbox",
                // Default limits, no tables, no hosts: every capability answers before it acts.
                grants: Default::default(),
                sandbox: Sandbox::default(),
                pool,
                schema: Default::default(),
                org: Uuid::nil(),
                user: Some(Uuid::nil()),
                role: Role::Member,
                request_id: "fixture",
                request,
                before_commit: None,
                // No credentials: a fixture reaches no provider.
                credentials: None,
            },
        )
        .await;
    match plugin_reply(&plugin.version, outcome) {
        Ok(reply) => Observed {
            status: reply.status.as_u16(),
            body: serde_json::from_slice(&reply.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into())),
        },
        Err(e) => Observed { status: e.code.status().as_u16(), body: crate::phases::respond::error_json(&e, "fixture") },
    }
}

/// Runs every fixture within [`BUDGET`], on a thread and runtime of its own; the first that
/// fails, or the one still running when the budget runs out, is the error
/// (`"fixture `name`: …"`). `pool` is never used for a query (see [`run_one`]).
pub async fn run(runtime: Arc<Runtime>, plugin: Arc<LoadedPlugin>, pool: sqlx::PgPool, fixtures: Vec<Fixture>) -> std::result::Result<usize, String> {
    let apart = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("fixture runtime: {e}"))?;
        rt.block_on(run_here(&runtime, &plugin, &pool, &fixtures, BUDGET))
    });
    apart.await.map_err(|e| format!("fixture run: {e}"))?
}

/// Runs the fixtures on the current runtime, all of them within `budget`.
async fn run_here(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, fixtures: &[Fixture], budget: Duration) -> std::result::Result<usize, String> {
    let deadline = Instant::now() + budget;
    for (i, f) in fixtures.iter().enumerate() {
        let over = || {
            format!(
                "fixture `{}`: the fixtures' time budget of {} s ran out while it ran ({i} of {} fixtures had passed)",
                f.name,
                budget.as_secs_f64(),
                fixtures.len()
            )
        };
        let left = deadline.checked_duration_since(Instant::now()).ok_or_else(over)?;
        tokio::time::timeout(left, check(runtime, plugin, pool, f)).await.map_err(|_| over())??;
    }
    Ok(fixtures.len())
}

/// Runs one fixture and compares what it answered with what it expects.
async fn check(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, f: &Fixture) -> std::result::Result<(), String> {
    let r = &f.request;
    let mut headers: Vec<Header> = r.headers.iter().map(|(n, v)| Header { name: n.to_ascii_lowercase(), value: v.clone() }).collect();
    let body = match (&r.raw_body, &r.body) {
        (Some(raw), _) => raw.clone().into_bytes(),
        (None, Some(v)) => v.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    if r.raw_body.is_none() && r.body.is_some() && !headers.iter().any(|h| h.name == "content-type") {
        headers.push(Header { name: "content-type".into(), value: "application/json".into() });
    }
    let request = Request { method: r.method.clone(), path: r.path.clone(), params: vec![], query: r.query.clone(), headers, body };
    let seen = run_one(runtime, plugin, pool, request).await;
    let fail = |what: String| Err(format!("fixture `{}`: {what}", f.name));
    if seen.status != f.expect.status {
        return fail(format!("expected status {}, got {} ({})", f.expect.status, seen.status, brief(&seen.body)));
    }
    if let Some(code) = &f.expect.error_code {
        if seen.body.get("error_code").and_then(Value::as_str) != Some(code) {
            return fail(format!("expected error_code {code}, got {}", brief(&seen.body)));
        }
    }
    if let Some(want) = &f.expect.body {
        if let Some(path) = mismatch(want, &seen.body, String::new()) {
            return fail(format!("body differs at `{path}` ({})", brief(&seen.body)));
        }
    }
    Ok(())
}

fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

/// Where `got` fails to contain `want`: objects as subsets (recursively), arrays of the same
/// length element by element, everything else exactly.
fn mismatch(want: &Value, got: &Value, at: String) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            w.iter().find_map(|(k, wv)| match g.get(k) {
                Some(gv) => mismatch(wv, gv, format!("{at}/{k}")),
                None => Some(format!("{at}/{k}")),
            })
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            w.iter().zip(g).enumerate().find_map(|(i, (wv, gv))| mismatch(wv, gv, format!("{at}/{i}")))
        }
        _ if want == got => None,
        _ => Some(if at.is_empty() { "/".into() } else { at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn embed_then_extract_round_trips_and_replaces() {
        let one = br#"[{"name":"a","request":{},"expect":{"status":200}}]"#;
        let two = br#"[{"name":"b","request":{"path":"/x"},"expect":{"status":422,"error_code":"VALIDATION_ERROR"}}]"#;
        let first = embed(EMPTY_COMPONENT, one).unwrap();
        let second = embed(&first, two).unwrap();
        let got = extract(&second).unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "b");
        assert_eq!(got[0].request.path, "/x");
        assert!(extract(EMPTY_COMPONENT).unwrap().is_none());
    }

    #[test]
    fn broken_fixtures_are_an_error_not_an_absence() {
        let mut bytes = embed(EMPTY_COMPONENT, b"[]").unwrap();
        // Corrupt the JSON in place (the last byte is `]`).
        *bytes.last_mut().unwrap() = b'{';
        assert!(extract(&bytes).is_err());
        assert!(embed(EMPTY_COMPONENT, b"{\"not\": \"a list\"}").is_err());
    }

    #[test]
    fn body_is_matched_as_a_subset() {
        let got = serde_json::json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        assert_eq!(mismatch(&serde_json::json!({"b": {"d": "x"}}), &got, String::new()), None);
        assert_eq!(mismatch(&serde_json::json!({"b": {"c": [1]}}), &got, String::new()).as_deref(), Some("/b/c"));
        assert_eq!(mismatch(&serde_json::json!({"z": 1}), &got, String::new()).as_deref(), Some("/z"));
        let list = serde_json::json!([{"err": "x", "detail": "d"}]);
        assert_eq!(mismatch(&serde_json::json!([{"err": "x"}]), &list, String::new()), None);
        assert_eq!(mismatch(&serde_json::json!([{"err": "y"}]), &list, String::new()).as_deref(), Some("/0/err"));
    }
}
