//! `hostile`: an untrusted tenant's plugin, on purpose. The containment tests drive it to
//! prove that a plugin which burns CPU, sleeps, holds database connections or locks, answers
//! huge bodies, eats memory, floods or forges logs, probes the network or other tenants' keys,
//! or traps fails **its own request only**: it cannot slow down, starve or reach past
//! another tenant.
//!
//! No shipped policy routes to it and it ships no `fixtures.json`: tests declare their own
//! route (and grants) and upload it as is.
//!
//! # Requests
//!
//! The mode comes from the query (`?mode=spin`) or else the JSON body's `"mode"` (default
//! `ok`). Parameters come from the JSON body, or else from the query string (numbers and
//! booleans as text: `?mode=sleep&ms=200`). Every parameter has a default:
//!
//! | mode | body (defaults shown) | models |
//! |---|---|---|
//! | `ok` | `{}` | control: 200 `{"ok":true}` at once |
//! | `spin` | `{"ms": null}` | CPU hog: busy loop forever (or for `ms` of wall time) |
//! | `sleep` | `{"ms": 1000}` | idle hog: WASI sleep, no gateway import |
//! | `lock-sleep` | `{"key": "hostile", "wait": false, "ms": 1000}` | advisory lock (and its connection) held while idle |
//! | `db-sleep` | `{"table": "crm_contacts", "column": "id", "for_update": false, "ms": 1000}` | pool connection held while idle |
//! | `big-response` | `{"bytes": 41943040, "status": 200, "headers": {}, "content_type": "application/json"}` | huge body; forbidden response headers |
//! | `memory` | `{"mib": 32, "ms": 0}` | linear-memory growth |
//! | `log-flood` | `{"lines": 1000, "fields": 8, "field_bytes": 256, "message_bytes": 64, "level": "info"}` | log volume |
//! | `log-forge` | `{"victim_org": "…", "channel": "all", "line": null}` | forged access lines naming another org |
//! | `stdout-flood` | `{"lines": 1000, "line_bytes": 128, "stream": "both", "ansi": true}` | stdio volume, terminal escapes |
//! | `outbound` | `{"url": "http://127.0.0.1:1/", "method": "GET", "headers": {}, "body": ""}` | SSRF / egress |
//! | `echo-request` | same as `outbound`, method default `POST` | what the plugin can see of its own outbound call |
//! | `insert-pk` | `{"table": "crm_contacts", "row": {…}, "returning": null, "on_conflict": null, "update": null, "on_error": "conflict"}` | another org's primary key as an existence oracle |
//! | `headers` | `{}` | which request headers reach a plugin |
//! | `trap` | `{"how": "panic"}` | trap kinds: `panic`, `unreachable`, `stack-overflow`, `oob`, `abort` |
//!
//! `headers` parameters (for `big-response`, `outbound`, `echo-request`) are either an object
//! `{"name": "value"}` or a list of pairs `[["set-cookie", "a=1"], ["set-cookie", "b=2"]]`
//! (for repeated names). Values in `insert-pk`'s `row`: a JSON string is text (also fine for
//! uuid and timestamp columns), a number an integer or float, `true`/`false` a boolean,
//! `null` null, and a one-key object `{"uuid"|"text"|"int"|"float"|"bool"|"json"|"timestamp": x}`
//! picks the kind; any other object or array is sent as JSON.
//!
//! # Answers
//!
//! Every mode that returns answers 200 with a JSON object carrying `"mode"` and what it did
//! (`ok` answers just `{"ok": true}`). A `tenant-db` error ends the mode with 409 `HOSTILE_DB_ERROR` whose `details`
//! are `{"error": "<db-error variant>", "detail": "<its payload>"}`, because after a
//! database error the host refuses to commit (and would turn a 200 into 502 with no detail).
//! An unknown mode is 400 `VALIDATION_FAILED`.
//!
//! # Budgets (the host as of this plugin's first commit)
//!
//! The CPU deadline measures wall time minus time spent in `tenant-db` and `outbound-http`
//! calls, so a WASI sleep, `log.emit` and stdio calls, and the host's lifting of a large
//! response all count as CPU: with the default `cpu_ms = 200`, `sleep`/`db-sleep`/
//! `lock-sleep` with `ms` above ~200 end in 504 `PLUGIN_TIMEOUT` (CPU deadline), and in a
//! debug-built gateway lifting a big response costs tens of ms per MiB (12 MiB passed and
//! 16 MiB failed the default budget in `gateway plugin check`; give 40 MiB `cpu_ms` ≥ 2000).
//! Give the test route the `cpu_ms` / `timeout_ms` the scenario needs.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use gateway_plugin_sdk::bindings::gateway::plugin::log::{self as wlog, Level};
use gateway_plugin_sdk::bindings::gateway::plugin::tenant_db::{
    self as db, ConflictAction, DbError, InsertQuery, OnConflict, SelectQuery, Value,
};
use gateway_plugin_sdk::db::value_to_json;
use gateway_plugin_sdk::http::{self, HttpError, IncomingResponse, OutgoingRequest};
use gateway_plugin_sdk::serde_json::{json, Map, Value as J};
use gateway_plugin_sdk::{self as sdk, context, Header, HandlerError, Problem, Request, Response};

const MIB: u64 = 1024 * 1024;

/// The modes, for the refusal of an unknown one.
const MODES: &[&str] = &[
    "ok",
    "spin",
    "sleep",
    "lock-sleep",
    "db-sleep",
    "big-response",
    "memory",
    "log-flood",
    "log-forge",
    "stdout-flood",
    "outbound",
    "echo-request",
    "insert-pk",
    "headers",
    "trap",
];

struct Hostile;

impl sdk::Guest for Hostile {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let p = Params::new(&req)?;
        let mode = p.str("mode", "ok");
        match mode.as_str() {
            "ok" => sdk::json(200, &json!({ "ok": true })),
            "spin" => spin(&p),
            "sleep" => sleep(&p),
            "lock-sleep" => lock_sleep(&p),
            "db-sleep" => db_sleep(&p),
            "big-response" => big_response(&p),
            "memory" => memory(&p),
            "log-flood" => log_flood(&p),
            "log-forge" => log_forge(&p),
            "stdout-flood" => stdout_flood(&p),
            "outbound" => outbound(&p, false),
            "echo-request" => outbound(&p, true),
            "insert-pk" => insert_pk(&p),
            "headers" => headers(&req),
            "trap" => trap(&p),
            other => Err(sdk::invalid_with(&format!("unknown mode {other:?}"), json!({ "modes": MODES }))),
        }
    }
}

sdk::export_plugin!(Hostile);

// ---------------------------------------------------------------------------------------------
// CPU and time
// ---------------------------------------------------------------------------------------------

/// `spin`: a guest that never yields. Models a plugin stuck in a hot loop (bug or attack):
/// only the CPU deadline (epoch interruption) can stop it, and while it runs it must not
/// hold up other tenants' requests on the same worker threads. Without `ms` it never
/// returns; with `ms` it spins for that much wall time and reports how far it got (to
/// compare a spinning neighbour's effect on everybody else's latency).
fn spin(p: &Params) -> Result<Response, HandlerError> {
    let until = p.opt_u64("ms").map(Duration::from_millis);
    let start = Instant::now();
    let mut iterations: u64 = 0;
    loop {
        // Pure guest work between clock reads, so this is CPU, not host calls.
        for _ in 0..65_536 {
            iterations = black_box(iterations.wrapping_add(1));
        }
        if let Some(limit) = until {
            if start.elapsed() >= limit {
                break;
            }
        }
    }
    sdk::json(200, &json!({
        "mode": "spin",
        "ms": until.map(|d| d.as_millis() as u64),
        "iterations": iterations,
        "elapsed_ms": start.elapsed().as_millis() as u64,
    }))
}

/// `sleep`: a guest that is idle but does not return, using only WASI (`wasi:clocks` +
/// `wasi:io/poll` under `std::thread::sleep`), no gateway import. Models a plugin parking
/// its instance slot: the wall-clock timeout must end it, and idling must not occupy a
/// worker thread or count as CPU.
fn sleep(p: &Params) -> Result<Response, HandlerError> {
    let ms = p.u64("ms", 1000);
    let slept = idle(ms);
    sdk::json(200, &json!({ "mode": "sleep", "ms": ms, "slept_ms": slept }))
}

/// Sleeps `ms` in WASI; the milliseconds actually slept.
fn idle(ms: u64) -> u64 {
    let start = Instant::now();
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    start.elapsed().as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// Database: connections, locks, other tenants' keys
// ---------------------------------------------------------------------------------------------

/// `lock-sleep`: takes the org-scoped advisory lock `key` (`try-lock`, or `lock` when
/// `"wait": true`), then idles `ms` while the invocation's transaction (and so a pool
/// connection) stays open. Models lock squatting: it must block only the same org's same
/// key (another org's `try-lock` on the same key must succeed), and the held connection
/// must not starve the other tenants' share of the pool. When `try-lock` finds the lock
/// held it answers at once with `"acquired": false`, without sleeping.
fn lock_sleep(p: &Params) -> Result<Response, HandlerError> {
    let key = p.str("key", "hostile");
    let wait = p.bool("wait", false);
    let ms = p.u64("ms", 1000);
    let start = Instant::now();
    let acquired = if wait {
        db::lock(&key).map_err(|e| db_failure("lock", e))?;
        true
    } else {
        db::try_lock(&key).map_err(|e| db_failure("try-lock", e))?
    };
    let lock_ms = start.elapsed().as_millis() as u64;
    let slept = if acquired { idle(ms) } else { 0 };
    sdk::json(200, &json!({
        "mode": "lock-sleep",
        "key": key,
        "call": if wait { "lock" } else { "try-lock" },
        "acquired": acquired,
        "lock_ms": lock_ms,
        "slept_ms": slept,
    }))
}

/// `db-sleep`: one trivial `select` (so the host opens the invocation's transaction on a
/// pooled connection), then idles `ms` with the connection checked out. Models a plugin
/// sitting on a connection: N of these from one org must not leave the others without a
/// connection (per-org share of the pool, wall-clock timeout). `for_update` also locks the
/// rows it read (needs `write`).
fn db_sleep(p: &Params) -> Result<Response, HandlerError> {
    let table = p.str("table", "crm_contacts");
    let column = p.str("column", "id");
    let for_update = p.bool("for_update", false);
    let ms = p.u64("ms", 1000);
    let start = Instant::now();
    let rows = db::select(&SelectQuery {
        table: table.clone(),
        columns: vec![column.clone()],
        filters: Vec::new(),
        order_by: Vec::new(),
        limit: Some(1),
        for_update,
    })
    .map_err(|e| db_failure("select", e))?;
    let select_ms = start.elapsed().as_millis() as u64;
    let slept = idle(ms);
    sdk::json(200, &json!({
        "mode": "db-sleep",
        "table": table,
        "column": column,
        "for_update": for_update,
        "rows": rows.rows.len(),
        "select_ms": select_ms,
        "slept_ms": slept,
    }))
}

/// `insert-pk`: inserts one row whose columns, primary key included, the caller chooses,
/// and reports exactly what the host said. Models probing for another org's rows: with a
/// globally unique key (e.g. `crm_contacts.id`), a `unique-violation` naming the primary
/// key for an id that exists only in another org would tell the attacker it exists. The
/// test compares the answer for another org's id with the answer for a fresh one.
///
/// Success: 200 `{"mode": "insert-pk", "affected": n, "rows": [{column: value}]}`. Failure:
/// 409 `HOSTILE_DB_ERROR` with details `{"error": "<variant>", "detail": "<payload>"}`, or,
/// with `"on_error": "ok"`, 200 `{"mode": "insert-pk", "error": …, "detail": …}` (which the
/// host turns into a bare 502 after a database-side error: that answer is an oracle too).
fn insert_pk(p: &Params) -> Result<Response, HandlerError> {
    let table = p.str("table", "crm_contacts");
    let row = match p.get("row") {
        Some(J::Object(m)) => m,
        _ => return Err(sdk::invalid("insert-pk needs \"row\": an object of column to value")),
    };
    let columns: Vec<String> = row.keys().cloned().collect();
    let values: Vec<Value> = row.values().map(db_value).collect();
    let returning = p.strings("returning").unwrap_or_else(|| columns.clone());
    let on_conflict = match (p.strings("update"), p.strings("on_conflict")) {
        (Some(set), target) => Some(OnConflict { target: target.unwrap_or_default(), action: ConflictAction::DoUpdate(set) }),
        (None, Some(target)) => Some(OnConflict { target, action: ConflictAction::DoNothing }),
        (None, None) => None,
    };
    let result = db::insert(&InsertQuery { table: table.clone(), columns, rows: vec![values], on_conflict, returning });
    match result {
        Ok(r) => sdk::json(200, &json!({ "mode": "insert-pk", "table": table, "affected": r.affected, "rows": rows_json(&r) })),
        Err(e) if p.str("on_error", "conflict") == "ok" => {
            let (error, detail) = db_error_parts(&e);
            sdk::json(200, &json!({ "mode": "insert-pk", "table": table, "error": error, "detail": detail }))
        }
        Err(e) => Err(db_failure("insert", e)),
    }
}

fn rows_json(r: &db::Rows) -> Vec<J> {
    r.rows
        .iter()
        .map(|row| J::Object(r.columns.iter().cloned().zip(row.iter().map(value_to_json)).collect()))
        .collect()
}

/// A JSON parameter as a `tenant-db` value (see the module docs).
fn db_value(v: &J) -> Value {
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::Text(s.clone()),
        J::Object(m) if m.len() == 1 => {
            let (k, x) = m.iter().next().unwrap();
            let text = || x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
            match k.as_str() {
                "uuid" => Value::Uuid(text()),
                "text" => Value::Text(text()),
                "timestamp" => Value::Timestamp(text()),
                "json" => Value::Json(text()),
                "int" => Value::Integer(x.as_i64().unwrap_or(0)),
                "float" => Value::Float(x.as_f64().unwrap_or(0.0)),
                "bool" => Value::Boolean(x.as_bool().unwrap_or(false)),
                _ => Value::Json(v.to_string()),
            }
        }
        other => Value::Json(other.to_string()),
    }
}

/// A `db-error` as its WIT variant name and payload, verbatim.
fn db_error_parts(e: &DbError) -> (&'static str, String) {
    match e {
        DbError::NotGranted(t) => ("not-granted", t.clone()),
        DbError::UnknownTable(t) => ("unknown-table", t.clone()),
        DbError::UnknownColumn(c) => ("unknown-column", c.clone()),
        DbError::TenantColumnReserved => ("tenant-column-reserved", String::new()),
        DbError::Invalid(m) => ("invalid", m.clone()),
        DbError::UniqueViolation(c) => ("unique-violation", c.clone()),
        DbError::ConstraintViolation(c) => ("constraint-violation", c.clone()),
        DbError::Timeout => ("timeout", String::new()),
        DbError::TooManyRows(n) => ("too-many-rows", n.to_string()),
        DbError::Unavailable => ("unavailable", String::new()),
        DbError::Aborted => ("aborted", String::new()),
    }
}

/// 409 `HOSTILE_DB_ERROR` carrying the `db-error` verbatim in `details`.
fn db_failure(call: &str, e: DbError) -> HandlerError {
    let (error, detail) = db_error_parts(&e);
    HandlerError::Conflict(Problem {
        code: Some("HOSTILE_DB_ERROR".into()),
        message: format!("tenant-db {call} failed: {error}"),
        details: Some(json!({ "error": error, "detail": detail }).to_string()),
    })
}

// ---------------------------------------------------------------------------------------------
// Responses and memory
// ---------------------------------------------------------------------------------------------

/// `big-response`: answers a body of exactly `bytes` bytes built in guest memory (a JSON
/// object padded with `x` when `bytes` leaves room for one, else `bytes` of `x`), with the
/// `headers` given set verbatim. Models response amplification (the gateway must cap or
/// stream it without buffering copies per tenant) and header injection: `set-cookie`,
/// `location`, `strict-transport-security`, `access-control-allow-origin`, `x-request-id`,
/// `content-length`, values with CR/LF … must be filtered or refused.
fn big_response(p: &Params) -> Result<Response, HandlerError> {
    let bytes = p.u64("bytes", 40 * MIB);
    let status = p.u64("status", 200).min(u64::from(u16::MAX)) as u16;
    let content_type = p.str("content_type", "application/json");
    let len = usize::try_from(bytes).unwrap_or(usize::MAX);
    let head = format!("{{\"mode\":\"big-response\",\"bytes\":{bytes},\"pad\":\"");
    let tail = "\"}";
    let mut body = Vec::with_capacity(len);
    if len >= head.len() + tail.len() {
        body.extend_from_slice(head.as_bytes());
        body.resize(len - tail.len(), b'x');
        body.extend_from_slice(tail.as_bytes());
    } else {
        body.resize(len, b'x');
    }
    let mut headers = vec![Header { name: "content-type".into(), value: content_type }];
    headers.extend(p.headers("headers"));
    Ok(Response { status, headers, body })
}

/// `memory`: allocates `mib` MiB and writes to every 4 KiB page of it (so the pages are
/// really resident, not just reserved), optionally holding it `ms`. Models a memory hog:
/// past the route's cap it must be `PLUGIN_RESOURCE_EXHAUSTED` for this request only, and
/// below it, held concurrently, it must not exhaust the instance pool for other tenants.
fn memory(p: &Params) -> Result<Response, HandlerError> {
    let mib = p.u64("mib", 32);
    let ms = p.u64("ms", 0);
    let len = usize::try_from(mib.saturating_mul(MIB)).unwrap_or(usize::MAX);
    // Zeroed memory fresh from `memory.grow` may never be written by the allocator; the loop
    // below writes one byte per page so that every page is really touched.
    let mut hog: Vec<u8> = vec![0; len];
    let mut sum: u64 = 0;
    for (i, page) in hog.chunks_mut(4096).enumerate() {
        page[0] = i as u8;
        sum = sum.wrapping_add(u64::from(black_box(page[0])));
    }
    let slept = idle(ms);
    let memory_bytes = core::arch::wasm32::memory_size(0) as u64 * 65_536;
    black_box(&hog);
    sdk::json(200, &json!({
        "mode": "memory",
        "mib": mib,
        "bytes": len,
        "linear_memory_bytes": memory_bytes,
        "checksum": sum,
        "slept_ms": slept,
    }))
}

// ---------------------------------------------------------------------------------------------
// Logs and stdio
// ---------------------------------------------------------------------------------------------

fn level(name: &str) -> Level {
    match name {
        "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" => Level::Error,
        _ => Level::Info,
    }
}

/// `log-flood`: calls `log.emit` `lines` times, each with a `message_bytes` message and
/// `fields` fields of `field_bytes`-byte keys and values. Models log-volume abuse (disk,
/// ingestion cost, drowning other tenants' lines): the host must cap lines and sizes per
/// invocation without slowing down, and the cap must not cost the request.
fn log_flood(p: &Params) -> Result<Response, HandlerError> {
    let lines = p.u64("lines", 1000);
    let nfields = p.u64("fields", 8) as usize;
    let field_bytes = p.u64("field_bytes", 256) as usize;
    let message_bytes = p.u64("message_bytes", 64) as usize;
    let lvl = p.str("level", "info");
    let message = "m".repeat(message_bytes);
    let fields: Vec<(String, String)> = (0..nfields)
        .map(|i| {
            let mut k = format!("f{i}_");
            let mut v = format!("v{i}_");
            k.extend(std::iter::repeat('k').take(field_bytes.saturating_sub(k.len())));
            v.extend(std::iter::repeat('v').take(field_bytes.saturating_sub(v.len())));
            (k, v)
        })
        .collect();
    let start = Instant::now();
    for _ in 0..lines {
        wlog::emit(level(&lvl), &message, &fields);
    }
    let per_line = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    sdk::json(200, &json!({
        "mode": "log-flood",
        "lines": lines,
        "fields": nfields,
        "field_bytes": field_bytes,
        "message_bytes": message_bytes,
        "bytes_sent": per_line as u64 * lines,
        "elapsed_ms": start.elapsed().as_millis() as u64,
    }))
}

/// `log-forge`: tries to write a log line that looks like the gateway's own, for another
/// org: a newline then a fake access line naming `victim_org`, in the message, in a field
/// key and value, as fields named like the host's own tags (`org_id`, `request_id`,
/// `plugin`), as a JSON fragment (for JSON log formats), and on stdout/stderr. Models log
/// injection: each plugin line must stay one line, tagged with the real org, so that
/// nothing in the logs can be attributed to a tenant that did not do it.
///
/// `channel`: `log`, `stdout`, `stderr` or `all`; `line` replaces the forged access line.
fn log_forge(p: &Params) -> Result<Response, HandlerError> {
    let victim = p.str("victim_org", "11111111-2222-3333-4444-555555555555");
    let channel = p.str("channel", "all");
    let forged = p.str(
        "line",
        &format!("2026-11-23T00:00:00Z INFO access org_id={victim} request_id=forged method=GET path=/v1/admin status=200"),
    );
    let json_forged = format!(r#""}} {{"timestamp":"2026-11-23T00:00:00Z","level":"INFO","org_id":"{victim}","status":200,"msg":"access"#);
    let message = format!("innocent\n{forged}\r\n{forged}\u{2028}{json_forged}");
    let fields: Vec<(String, String)> = vec![
        ("org_id".into(), victim.clone()),
        ("request_id".into(), "forged".into()),
        ("plugin".into(), "echo".into()),
        (format!("k\n{forged}"), format!("v\n{forged}")),
        ("quote".into(), format!("\" org_id={victim} \"")),
        ("ansi".into(), "\x1b[2K\r\x1b[1A".into()),
    ];
    let mut done = Vec::new();
    if channel == "log" || channel == "all" {
        wlog::emit(Level::Error, &message, &fields);
        done.push("log");
    }
    let stdio_line = format!("innocent\n{forged}\n{json_forged}\n");
    if channel == "stdout" || channel == "all" {
        let _ = std::io::stdout().write_all(stdio_line.as_bytes());
        let _ = std::io::stdout().flush();
        done.push("stdout");
    }
    if channel == "stderr" || channel == "all" {
        let _ = std::io::stderr().write_all(stdio_line.as_bytes());
        done.push("stderr");
    }
    sdk::json(200, &json!({
        "mode": "log-forge",
        "victim_org": victim,
        "channels": done,
        "message": message,
        "fields": fields,
    }))
}

/// `stdout-flood`: writes `lines` lines of `line_bytes` bytes to stdout and/or stderr
/// (`stream`: `stdout`, `stderr`, `both`), each carrying ANSI escapes (colour, clear screen,
/// cursor moves, an OSC window title, a bare CR) when `ansi`. Models stdio abuse: WASI
/// stdio is not inherited, so the capture must be bounded, must not end the request when
/// full, and what reaches the log must not carry raw terminal control sequences.
/// Write errors are counted, never fatal (`println!` would panic on them).
fn stdout_flood(p: &Params) -> Result<Response, HandlerError> {
    let lines = p.u64("lines", 1000);
    let line_bytes = p.u64("line_bytes", 128) as usize;
    let stream = p.str("stream", "both");
    let ansi = p.bool("ansi", true);
    let escapes = "\x1b[31m\x1b[1mRED\x1b[0m\x1b[2J\x1b[H\x1b]0;pwned\x07\r";
    let mut line = String::with_capacity(line_bytes + escapes.len() + 1);
    if ansi {
        line.push_str(escapes);
    }
    line.extend(std::iter::repeat('o').take(line_bytes.saturating_sub(line.len() + 1)));
    line.push('\n');
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let (mut written, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..lines {
        for (name, w) in [("stdout", &mut out as &mut dyn Write), ("stderr", &mut err as &mut dyn Write)] {
            if stream != "both" && stream != name {
                continue;
            }
            match w.write_all(line.as_bytes()) {
                Ok(()) => written += line.len() as u64,
                Err(_) => errors += 1,
            }
        }
    }
    let _ = out.flush();
    sdk::json(200, &json!({
        "mode": "stdout-flood",
        "lines": lines,
        "line_bytes": line.len(),
        "stream": stream,
        "ansi": ansi,
        "bytes_written": written,
        "write_errors": errors,
        "elapsed_ms": start.elapsed().as_millis() as u64,
    }))
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// `outbound` / `echo-request`: one `outbound-http.send` to `url`. `outbound` models egress
/// and SSRF (loopback, metadata addresses, other tenants' hosts, redirects) and answers what
/// came back; `echo-request` also answers the request exactly as the plugin built it, so a
/// test against an echoing server can prove that credentials the host injects are visible
/// neither in the plugin's request nor anywhere else the plugin can read.
///
/// Both answer 200: `{"mode", "sent"?, "response": {"status", "headers": [[n, v]],
/// "body", "body_bytes", "body_json"?}}` or `{"mode", "sent"?, "error": "<http-error
/// variant>", "detail": "<payload>"}`.
fn outbound(p: &Params, echo: bool) -> Result<Response, HandlerError> {
    let req = OutgoingRequest {
        method: p.str("method", if echo { "POST" } else { "GET" }),
        url: p.str("url", "http://127.0.0.1:1/"),
        headers: p.headers("headers"),
        body: match p.get("body") {
            Some(J::String(s)) => s.into_bytes(),
            Some(J::Null) | None if echo => br#"{"hostile":"echo-request"}"#.to_vec(),
            Some(J::Null) | None => Vec::new(),
            Some(other) => other.to_string().into_bytes(),
        },
    };
    let mode = if echo { "echo-request" } else { "outbound" };
    let mut answer = Map::new();
    answer.insert("mode".into(), mode.into());
    if echo {
        answer.insert("sent".into(), json!({
            "method": req.method,
            "url": req.url,
            "headers": pairs(&req.headers),
            "body": String::from_utf8_lossy(&req.body),
        }));
    }
    let start = Instant::now();
    match http::send(&req) {
        Ok(r) => {
            answer.insert("response".into(), response_json(&r));
        }
        Err(e) => {
            let (error, detail) = http_error_parts(e);
            answer.insert("error".into(), error.into());
            answer.insert("detail".into(), detail.into());
        }
    }
    answer.insert("elapsed_ms".into(), (start.elapsed().as_millis() as u64).into());
    sdk::json(200, &J::Object(answer))
}

fn pairs(headers: &[Header]) -> Vec<(String, String)> {
    headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect()
}

fn response_json(r: &IncomingResponse) -> J {
    let mut m = Map::new();
    m.insert("status".into(), r.status.into());
    m.insert("headers".into(), json!(pairs(&r.headers)));
    m.insert("body".into(), String::from_utf8_lossy(&r.body).into_owned().into());
    m.insert("body_bytes".into(), r.body.len().into());
    if let Ok(v) = gateway_plugin_sdk::serde_json::from_slice::<J>(&r.body) {
        m.insert("body_json".into(), v);
    }
    J::Object(m)
}

fn http_error_parts(e: HttpError) -> (&'static str, String) {
    match e {
        HttpError::NotAllowed(m) => ("not-allowed", m),
        HttpError::ForbiddenAddress(m) => ("forbidden-address", m),
        HttpError::InvalidRequest(m) => ("invalid-request", m),
        HttpError::DnsFailed(m) => ("dns-failed", m),
        HttpError::ConnectFailed(m) => ("connect-failed", m),
        HttpError::Timeout => ("timeout", String::new()),
        HttpError::ResponseTooLarge(n) => ("response-too-large", n.to_string()),
        HttpError::Protocol(m) => ("protocol", m),
    }
}

// ---------------------------------------------------------------------------------------------
// What the plugin is given, and failing
// ---------------------------------------------------------------------------------------------

/// `headers`: answers the request exactly as the plugin received it, and its context.
/// Models a plugin harvesting credentials: `authorization`, `cookie`,
/// `proxy-authorization`, API-key headers and the like must never reach it.
fn headers(req: &Request) -> Result<Response, HandlerError> {
    let c = context::get();
    sdk::json(200, &json!({
        "mode": "headers",
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "params": req.params,
        "headers": pairs(&req.headers),
        "body_bytes": req.body.len(),
        "context": {
            "org_id": c.org_id,
            "user_id": c.user_id,
            "role": match c.role {
                context::Role::Member => "member",
                context::Role::Admin => "admin",
                context::Role::SuperAdmin => "super_admin",
            },
            "request_id": c.request_id,
            "route_id": c.route_id,
            "plugin_name": c.plugin_name,
            "plugin_version": c.plugin_version,
        },
    }))
}

/// `trap`: fails the instance. Models a crashing plugin (bug or attempt to corrupt shared
/// state): the request gets 502 `PLUGIN_FAILED`, its writes roll back, and the next request,
/// from any org, gets a clean instance. `how`: `panic` (Rust panic, an `unreachable` under
/// `panic = "abort"`), `unreachable` (the wasm instruction), `stack-overflow` (unbounded
/// recursion against the host's wasm stack limit), `oob` (a load past the end of linear
/// memory), `abort` (`std::process::abort`).
fn trap(p: &Params) -> Result<Response, HandlerError> {
    match p.str("how", "panic").as_str() {
        "unreachable" => core::arch::wasm32::unreachable(),
        "stack-overflow" => {
            let depth = recurse(black_box(1));
            sdk::json(200, &json!({ "mode": "trap", "how": "stack-overflow", "depth": depth }))
        }
        "oob" => {
            let end = core::arch::wasm32::memory_size(0) * 65_536;
            // SAFETY: none; the point is the trap. Volatile, so the load is not optimised away.
            let v = unsafe { std::ptr::read_volatile((end + black_box(16)) as *const u64) };
            sdk::json(200, &json!({ "mode": "trap", "how": "oob", "read": v }))
        }
        "abort" => std::process::abort(),
        _ => panic!("hostile plugin asked to trap"),
    }
}

/// Recurses until the stack runs out; the 1 KiB frame, live across the call, makes that quick.
/// (The base case is there for the compiler: `n` starts at 1 and only grows.)
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if black_box(n) == 0 {
        return 0;
    }
    let frame = black_box([n as u8; 1024]);
    let below = recurse(black_box(n + 1));
    below.wrapping_add(u64::from(black_box(&frame)[(n % 1024) as usize]))
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// The request's parameters: the JSON body's keys, or else the query string's.
struct Params {
    body: J,
    query: Vec<(String, String)>,
}

impl Params {
    fn new(req: &Request) -> Result<Params, HandlerError> {
        Ok(Params { body: req.json_value()?, query: req.query_pairs() })
    }

    /// `mode` from the query wins over the body's, so one body can be replayed in every mode;
    /// any other key is the body's first.
    fn get(&self, key: &str) -> Option<J> {
        let from_query = || self.query.iter().find(|(k, _)| k == key).map(|(_, v)| J::String(v.clone()));
        if key == "mode" {
            return from_query().or_else(|| self.body.get(key).cloned());
        }
        self.body.get(key).cloned().or_else(from_query)
    }

    fn opt_u64(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            J::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            J::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn u64(&self, key: &str, default: u64) -> u64 {
        self.opt_u64(key).unwrap_or(default)
    }

    fn bool(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(J::Bool(b)) => b,
            Some(J::String(s)) => matches!(s.as_str(), "true" | "1" | "yes"),
            _ => default,
        }
    }

    fn str(&self, key: &str, default: &str) -> String {
        match self.get(key) {
            Some(J::String(s)) => s,
            Some(J::Null) | None => default.to_string(),
            Some(other) => other.to_string(),
        }
    }

    /// A list of strings (`["a", "b"]`), or `None` when absent.
    fn strings(&self, key: &str) -> Option<Vec<String>> {
        match self.get(key)? {
            J::Array(a) => Some(a.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect()),
            J::String(s) => Some(vec![s]),
            _ => None,
        }
    }

    /// Headers as `{"name": "value"}` or `[["name", "value"], …]`, names and values verbatim.
    fn headers(&self, key: &str) -> Vec<Header> {
        let text = |v: &J| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        match self.get(key) {
            Some(J::Object(m)) => m.iter().map(|(k, v)| Header { name: k.clone(), value: text(v) }).collect(),
            Some(J::Array(a)) => a
                .iter()
                .filter_map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([n, v]) => Some(Header { name: text(n), value: text(v) }),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
