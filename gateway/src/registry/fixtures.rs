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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::phases::dispatch::plugin_reply;
use crate::db::structured::Schema;
use crate::plugin::bindings::types::{Header, Request};
use crate::plugin::grants::Grants;
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
    /// Rows inserted in the fixture's org before it runs. A fixture with `seed` (even an
    /// empty one) is a **database fixture**: it runs with the manifest's grants against a
    /// throwaway database (`gateway plugin check`), and is skipped where there is none (an
    /// upload).
    #[serde(default)]
    pub seed: Option<Seed>,
}

/// Rows to insert, by table: one object (tables in alphabetical order), or a list of them
/// (in list order: parents before children).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Seed {
    Tables(BTreeMap<String, Vec<Map<String, Value>>>),
    Ordered(Vec<BTreeMap<String, Vec<Map<String, Value>>>>),
}

impl Seed {
    /// `(table, row)` in insertion order.
    pub fn rows(&self) -> Vec<(&str, &Map<String, Value>)> {
        let groups: Vec<&BTreeMap<String, Vec<Map<String, Value>>>> = match self {
            Seed::Tables(t) => vec![t],
            Seed::Ordered(list) => list.iter().collect(),
        };
        groups.into_iter().flat_map(|g| g.iter().flat_map(|(t, rows)| rows.iter().map(move |r| (t.as_str(), r)))).collect()
    }
}

impl Fixture {
    /// Whether it needs a database (and grants) to run: see [`Fixture::seed`].
    pub fn needs_database(&self) -> bool {
        self.seed.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    #[serde(default = "post")]
    pub method: String,
    #[serde(default = "root")]
    pub path: String,
    /// A route pattern (`/v1/notes/{id}`): path parameters are taken from `path` by it.
    #[serde(default)]
    pub route: Option<String>,
    /// Path parameters, on top of (and over) those `route` takes from `path`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub query: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The caller's role: `member` (default), `admin` or `super_admin`.
    #[serde(default)]
    pub role: Option<String>,
    /// The caller's org: a UUID, or a label (`"acme"`) that always stands for the same
    /// made-up UUID ([`org_id`]). Default: the nil UUID.
    #[serde(default)]
    pub org: Option<String>,
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

/// Who calls, and what the plugin may reach while it answers.
pub struct Caller {
    pub org: Uuid,
    pub role: Role,
    pub grants: Arc<Grants>,
    pub schema: Arc<Schema>,
}

impl Caller {
    /// A member of the nil org, with no grants: the sandbox of uploads and plain `check`.
    pub fn sandboxed() -> Caller {
        Caller { org: Uuid::nil(), role: Role::Member, grants: Default::default(), schema: Default::default() }
    }
}

/// Where database fixtures run: a throwaway database (never a gateway's own), its schema,
/// and the grants the plugin's manifest declares.
pub struct FixtureDb {
    pub pool: sqlx::PgPool,
    pub schema: Arc<Schema>,
    pub grants: Arc<Grants>,
}

/// Runs one request in the no-grant sandbox. `pool` is never used for a query (no grants),
/// it only satisfies the invocation's shape.
pub async fn run_one(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, request: Request) -> Observed {
    run_as(runtime, plugin, pool, request, Caller::sandboxed()).await
}

/// Runs one request as `caller`, with its grants, default limits.
pub async fn run_as(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, request: Request, caller: Caller) -> Observed {
    let outcome = runtime
        .invoke(
            plugin,
            Invocation {
                label: "sandbox",
                grants: caller.grants,
                sandbox: Sandbox::default(),
                pool,
                schema: caller.schema,
                org: caller.org,
                user: Some(Uuid::nil()),
                role: caller.role,
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

/// Runs every fixture that needs no database within [`BUDGET`], on a thread and runtime of
/// its own; the first that fails, or the one still running when the budget runs out, is the
/// error (`"fixture `name`: …"`). Database fixtures (with `seed`) are skipped: an upload has
/// no throwaway database to run them in (`gateway plugin check` runs them). `pool` is never
/// used for a query (see [`run_one`]). Returns how many ran and passed.
pub async fn run(runtime: Arc<Runtime>, plugin: Arc<LoadedPlugin>, pool: sqlx::PgPool, fixtures: Vec<Fixture>) -> std::result::Result<usize, String> {
    let (fixtures, skipped): (Vec<Fixture>, Vec<Fixture>) = fixtures.into_iter().partition(|f| !f.needs_database());
    if !skipped.is_empty() {
        tracing::info!(plugin = %plugin.name, skipped = skipped.len(), "plugin_fixtures_skipped_need_database");
    }
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

/// What happened to one fixture in [`run_all`].
#[derive(Debug, serde::Serialize)]
pub struct Ran {
    pub name: String,
    pub database: bool,
    /// `passed`, `failed` or `skipped` (a database fixture without a database).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs every fixture (each within [`BUDGET`]) and reports each, for `gateway plugin check`:
/// the plain ones in the no-grant sandbox exactly as an upload runs them, the database ones
/// in `db` (each from an empty org: created, seeded, asked, then removed with its rows), or
/// skipped when there is no `db`.
pub async fn run_all(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, fixtures: &[Fixture], db: Option<&FixtureDb>) -> Vec<Ran> {
    let mut out = Vec::with_capacity(fixtures.len());
    for f in fixtures {
        let database = f.needs_database();
        let result = match (database, db) {
            (false, _) => Some(tokio::time::timeout(BUDGET, check(runtime, plugin, pool, f)).await),
            (true, Some(db)) => Some(tokio::time::timeout(BUDGET, with_database(runtime, plugin, db, f)).await),
            (true, None) => None,
        };
        let (outcome, error) = match result {
            None => ("skipped", None),
            Some(done) => match done {
                Ok(Ok(())) => ("passed", None),
                Ok(Err(e)) => ("failed", Some(e)),
                Err(_) => ("failed", Some(format!("fixture `{}`: ran longer than {} s", f.name, BUDGET.as_secs()))),
            },
        };
        out.push(Ran { name: f.name.clone(), database, outcome, error });
    }
    out
}

/// A database fixture: its org created and seeded, the request run with `db`'s grants, the
/// answer compared; then the org and every row in it removed, so the next fixture starts
/// from an empty database too.
async fn with_database(runtime: &Runtime, plugin: &LoadedPlugin, db: &FixtureDb, f: &Fixture) -> std::result::Result<(), String> {
    let fail = |what: String| format!("fixture `{}`: {what}", f.name);
    let (org, role) = caller(&f.request).map_err(fail)?;
    let request = request_of(&f.request).map_err(fail)?;
    let label = f.request.org.as_deref().unwrap_or("fixture");
    crate::db::seed::ensure_org(&db.pool, org, label).await.map_err(|e| fail(e.to_string()))?;
    let seeded = async {
        let mut tx = crate::db::begin_tenant(&db.pool, org, crate::role::Actor::System).await?;
        for (table, row) in f.seed.as_ref().map(Seed::rows).unwrap_or_default() {
            crate::db::seed::insert_row(&mut tx, &db.schema, table, row).await?;
        }
        tx.commit().await
    };
    let result = match seeded.await {
        Err(e) => Err(fail(e.to_string())),
        Ok(()) => {
            let caller = Caller { org, role, grants: db.grants.clone(), schema: db.schema.clone() };
            let seen = run_as(runtime, plugin, &db.pool, request, caller).await;
            compare(f, &seen)
        }
    };
    crate::db::seed::remove_org(&db.pool, org).await.map_err(|e| fail(format!("removing its org: {e}")))?;
    result
}

/// The grants a manifest's needs amount to, for database fixtures: `[needs]` together with
/// every `[needs.routes.*]` (a fixture is not run on one route). Credentials are never
/// granted here: a fixture reaches no provider.
pub fn grants_from(needs: &super::manifest::Needs) -> std::result::Result<Grants, String> {
    let mut grants = Grants::default();
    for need in std::iter::once(&needs.all).chain(needs.routes.values()) {
        for (table, access) in &need.tables {
            let entry = grants.tables.entry(table.clone()).or_insert(*access);
            *entry = (*entry).max(*access);
        }
        for h in &need.hosts {
            let p = crate::plugin::host::host_pattern::HostPattern::parse(h).map_err(|e| format!("needs.hosts `{h}`: {e}"))?;
            grants.hosts.push(p);
        }
        grants.locks |= need.locks;
    }
    Ok(grants)
}

/// The org and role a fixture's request is made as.
pub fn caller(r: &FixtureRequest) -> std::result::Result<(Uuid, Role), String> {
    let role = match r.role.as_deref() {
        None => Role::Member,
        Some(s) => Role::parse(s).ok_or_else(|| format!("unknown role `{s}` (member, admin or super_admin)"))?,
    };
    Ok((r.org.as_deref().map(org_id).unwrap_or_else(Uuid::nil), role))
}

/// The org a fixture's `org` names: a UUID as written, or a label's own made-up UUID (the
/// first 16 bytes of SHA-256 of `gateway fixture org <label>`, as a version-8 UUID), the same
/// on every run and machine.
pub fn org_id(label: &str) -> Uuid {
    if let Ok(id) = Uuid::parse_str(label) {
        return id;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("gateway fixture org {label}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Path parameters `route` (`/v1/notes/{id}`) takes from `path`; `None` when it does not match.
pub fn params_from(route: &str, path: &str) -> Option<Vec<(String, String)>> {
    let r: Vec<&str> = route.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if r.len() != p.len() {
        return None;
    }
    let mut out = Vec::new();
    for (rs, ps) in r.iter().zip(&p) {
        match rs.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            Some(name) if !ps.is_empty() => out.push((name.to_string(), ps.to_string())),
            Some(_) => return None,
            None if rs == ps => {}
            None => return None,
        }
    }
    Some(out)
}

/// The request a fixture describes.
pub fn request_of(r: &FixtureRequest) -> std::result::Result<Request, String> {
    let mut headers: Vec<Header> = r.headers.iter().map(|(n, v)| Header { name: n.to_ascii_lowercase(), value: v.clone() }).collect();
    let body = match (&r.raw_body, &r.body) {
        (Some(raw), _) => raw.clone().into_bytes(),
        (None, Some(v)) => v.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    if r.raw_body.is_none() && r.body.is_some() && !headers.iter().any(|h| h.name == "content-type") {
        headers.push(Header { name: "content-type".into(), value: "application/json".into() });
    }
    let mut params = match &r.route {
        Some(route) => params_from(route, &r.path).ok_or_else(|| format!("path `{}` does not match route `{route}`", r.path))?,
        None => Vec::new(),
    };
    for (k, v) in &r.params {
        params.retain(|(n, _)| n != k);
        params.push((k.clone(), v.clone()));
    }
    Ok(Request { method: r.method.clone(), path: r.path.clone(), params, query: r.query.clone(), headers, body })
}

/// Runs one fixture in the no-grant sandbox (as its caller) and compares what it answered
/// with what it expects.
async fn check(runtime: &Runtime, plugin: &LoadedPlugin, pool: &sqlx::PgPool, f: &Fixture) -> std::result::Result<(), String> {
    let fail = |what: String| format!("fixture `{}`: {what}", f.name);
    let (org, role) = caller(&f.request).map_err(fail)?;
    let request = request_of(&f.request).map_err(fail)?;
    let seen = run_as(runtime, plugin, pool, request, Caller { org, role, ..Caller::sandboxed() }).await;
    compare(f, &seen)
}

/// Whether `seen` is what `f` expects; if not, what was expected and what came.
fn compare(f: &Fixture, seen: &Observed) -> std::result::Result<(), String> {
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
            let at = |v: &Value| if path == "/" { Some(v.clone()) } else { v.pointer(&path).cloned() };
            let expected = at(want).map(|v| brief(&v)).unwrap_or_else(|| "(nothing)".into());
            let got = at(&seen.body).map(|v| brief(&v)).unwrap_or_else(|| "(missing)".into());
            return fail(format!("body differs at `{path}`: expected {expected}, got {got} (whole body: {})", brief(&seen.body)));
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
    fn requests_carry_route_params_query_role_and_org() {
        let f: Vec<Fixture> = serde_json::from_str(
            r#"[{"name": "n", "request": {"method": "GET", "route": "/v1/notes/{id}/x/{part}", "path": "/v1/notes/7/x/a",
                  "params": {"part": "b"}, "query": "q=1", "role": "admin", "org": "acme"},
                 "expect": {"status": 200}}]"#,
        )
        .unwrap();
        let r = request_of(&f[0].request).unwrap();
        assert_eq!(r.params, vec![("id".to_string(), "7".to_string()), ("part".to_string(), "b".to_string())]);
        assert_eq!(r.query, "q=1");
        let (org, role) = caller(&f[0].request).unwrap();
        assert_eq!(role, Role::Admin);
        assert_eq!(org, org_id("acme"));
        assert_ne!(org_id("acme"), org_id("other"));
        assert_eq!(org_id("00000000-0000-0000-0000-0000000000aa").to_string(), "00000000-0000-0000-0000-0000000000aa");
        assert!(!f[0].needs_database());
        let mut bad = f[0].request.role.clone();
        bad.replace("owner".into());
        let req = FixtureRequest { role: bad, ..serde_json::from_str(r#"{}"#).unwrap() };
        assert!(caller(&req).unwrap_err().contains("owner"));
        let req = FixtureRequest { route: Some("/v1/notes/{id}".into()), path: "/v1/other/1".into(), ..serde_json::from_str("{}").unwrap() };
        assert!(request_of(&req).unwrap_err().contains("does not match"));
    }

    #[test]
    fn params_follow_the_route_pattern() {
        assert_eq!(params_from("/v1/a/{id}", "/v1/a/1"), Some(vec![("id".into(), "1".into())]));
        assert_eq!(params_from("/v1/a/{id}", "/v1/a"), None);
        assert_eq!(params_from("/v1/a/{id}", "/v1/b/1"), None);
        assert_eq!(params_from("/v1/a", "/v1/a"), Some(vec![]));
    }

    #[test]
    fn seeds_make_database_fixtures_in_either_form() {
        let f: Vec<Fixture> = serde_json::from_str(
            r#"[{"name": "a", "seed": {}, "request": {}, "expect": {"status": 200}},
                {"name": "b", "seed": {"t2": [{"x": 1}], "t1": [{"y": 2}, {}]}, "request": {}, "expect": {"status": 200}},
                {"name": "c", "seed": [{"t2": [{"x": 1}]}, {"t1": [{"y": 2}]}], "request": {}, "expect": {"status": 200}}]"#,
        )
        .unwrap();
        assert!(f.iter().all(Fixture::needs_database));
        let tables = |f: &Fixture| f.seed.as_ref().unwrap().rows().into_iter().map(|(t, _)| t.to_string()).collect::<Vec<_>>();
        assert!(tables(&f[0]).is_empty());
        assert_eq!(tables(&f[1]), ["t1", "t1", "t2"]);
        assert_eq!(tables(&f[2]), ["t2", "t1"]);
    }

    #[test]
    fn grants_come_from_every_need_of_the_manifest() {
        let m = super::super::manifest::Manifest::parse(
            "[plugin]\nversion = \"1.0.0\"\n[needs]\ntables = { a = \"read\", b = \"write\" }\nhosts = [\"https://api.example.com\"]\n\
             [needs.routes.r]\ntables = { a = \"write\" }\nlocks = true\n",
        )
        .unwrap();
        let g = grants_from(&m.needs).unwrap();
        assert_eq!(g.tables.get("a"), Some(&crate::plugin::grants::Access::Write));
        assert_eq!(g.tables.get("b"), Some(&crate::plugin::grants::Access::Write));
        assert_eq!(g.hosts.len(), 1);
        assert!(g.locks);
    }

    #[test]
    fn a_body_mismatch_shows_expected_and_actual() {
        let f: Vec<Fixture> = serde_json::from_str(r#"[{"name": "n", "request": {}, "expect": {"status": 200, "body": {"a": [{"b": 1}]}}}]"#).unwrap();
        let e = compare(&f[0], &Observed { status: 200, body: serde_json::json!({"a": [{"b": 2}]}) }).unwrap_err();
        assert!(e.contains("at `/a/0/b`: expected 1, got 2"), "{e}");
        let e = compare(&f[0], &Observed { status: 404, body: serde_json::json!({}) }).unwrap_err();
        assert!(e.contains("expected status 200, got 404"), "{e}");
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
