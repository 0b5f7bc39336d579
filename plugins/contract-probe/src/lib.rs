//! `contract-probe`: exercises every import from inside the sandbox, driven by its request
//! body. The contract suite (`tests/integration/contract_wit.rs`) sends it programs such as
//!
//! ```json
//! {"steps": [{"insert": {"table": "probe_items", "columns": ["name"], "rows": [[{"text": "a"}]],
//!             "returning": ["id"]}}],
//!  "then": "ok"}
//! ```
//!
//! and reads back one result per step: `{"ok": …}` or `{"err": "<variant>", "detail": "…"}`.
//! `then` decides how the invocation ends: `ok` (respond), `error` (handler error, the results
//! in its `details`), `trap`
//! (panic), `loop` (spin forever), `alloc` (grow memory without bound). With
//! `"succeed_on_attempt": N` it fails every job attempt (header `x-job-attempt`) before the Nth.

use gateway_plugin_sdk::bindings::gateway::plugin::tenant_db::{
    self as db, Assignment, ColumnRef, Comparison, ConflictAction, DbError, DeleteQuery, Earlier, Filter, InsertQuery,
    JsonFilled, OnConflict, Order, SelectQuery, Statement, UpdateQuery, Value,
};
use gateway_plugin_sdk::db::value_to_json;
use gateway_plugin_sdk::http::{self, HttpError, OutgoingRequest};
use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, context, Header, HandlerError, Request, Response};

struct Probe;

fn s(v: &J, k: &str) -> String {
    v.get(k).and_then(J::as_str).unwrap_or_default().to_string()
}

fn strings(v: &J, k: &str) -> Vec<String> {
    v.get(k).and_then(J::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn value(v: &J) -> Value {
    match v {
        J::Null => Value::Null,
        J::Object(m) => {
            let (k, x) = m.iter().next().unwrap();
            match k.as_str() {
                "bool" => Value::Boolean(x.as_bool().unwrap_or(false)),
                "int" => Value::Integer(x.as_i64().unwrap_or(0)),
                "float" => Value::Float(x.as_f64().unwrap_or(0.0)),
                "json" => Value::Json(x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())),
                "uuid" => Value::uuid(x.as_str().unwrap_or_default()),
                "timestamp" => Value::timestamp(x.as_str().unwrap_or_default()),
                "earlier" => Value::Earlier(earlier(x)),
                "json_filled" => Value::JsonFilled(JsonFilled {
                    document: s(x, "document"),
                    fill: x
                        .get("fill")
                        .and_then(J::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|f| {
                                    let path = f.get(0).and_then(J::as_array).map(|p| p.iter().filter_map(|k| k.as_str().map(str::to_string)).collect()).unwrap_or_default();
                                    (path, earlier(f.get(1).unwrap_or(&J::Null)))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                _ => Value::text(x.as_str().unwrap_or_default()),
            }
        }
        other => Value::text(other.as_str().unwrap_or_default()),
    }
}

/// `{"statement": 0, "row": 0, "column": "id"}`
fn earlier(v: &J) -> Earlier {
    let n = |k: &str| v.get(k).and_then(J::as_u64).unwrap_or(0) as u32;
    Earlier { statement: n("statement"), row: n("row"), column: s(v, "column") }
}

fn column_ref(v: &J) -> ColumnRef {
    ColumnRef { column: s(v, "column"), path: strings(v, "path") }
}

fn filters(v: &J) -> Vec<Filter> {
    v.get("filters")
        .and_then(J::as_array)
        .map(|a| {
            a.iter()
                .map(|f| Filter {
                    target: column_ref(f),
                    op: match s(f, "op").as_str() {
                        "ne" => Comparison::Ne,
                        "lt" => Comparison::Lt,
                        "le" => Comparison::Le,
                        "gt" => Comparison::Gt,
                        "ge" => Comparison::Ge,
                        "is-null" => Comparison::IsNull,
                        "is-not-null" => Comparison::IsNotNull,
                        _ => Comparison::Eq,
                    },
                    value: value(f.get("value").unwrap_or(&J::Null)),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn db_err(e: DbError) -> J {
    let (name, detail) = match e {
        DbError::NotGranted(t) => ("not-granted", t),
        DbError::UnknownTable(t) => ("unknown-table", t),
        DbError::UnknownColumn(c) => ("unknown-column", c),
        DbError::TenantColumnReserved => ("tenant-column-reserved", String::new()),
        DbError::Invalid(m) => ("invalid", m),
        DbError::UniqueViolation(c) => ("unique-violation", c),
        DbError::ConstraintViolation(c) => ("constraint-violation", c),
        DbError::Timeout => ("timeout", String::new()),
        DbError::TooManyRows(n) => ("too-many-rows", n.to_string()),
        DbError::Unavailable => ("unavailable", String::new()),
        DbError::Aborted => ("aborted", String::new()),
    };
    json!({ "err": name, "detail": detail })
}

fn http_err(e: HttpError) -> J {
    let (name, detail) = match e {
        HttpError::NotAllowed(m) => ("not-allowed", m),
        HttpError::ForbiddenAddress(m) => ("forbidden-address", m),
        HttpError::InvalidRequest(m) => ("invalid-request", m),
        HttpError::DnsFailed(m) => ("dns-failed", m),
        HttpError::ConnectFailed(m) => ("connect-failed", m),
        HttpError::Timeout => ("timeout", String::new()),
        HttpError::ResponseTooLarge(n) => ("response-too-large", n.to_string()),
        HttpError::Protocol(m) => ("protocol", m),
    };
    json!({ "err": name, "detail": detail })
}

fn rows(r: Result<db::Rows, DbError>) -> J {
    match r {
        Ok(r) => json!({ "ok": rows_json(&r) }),
        Err(e) => db_err(e),
    }
}

/// A `tenant-db` step as a batch statement (the single calls run the same records).
fn statement(st: &J) -> Option<Statement> {
    if let Some(q) = st.get("select") {
        return Some(Statement::Select(SelectQuery {
            table: s(q, "table"),
            columns: strings(q, "columns"),
            filters: filters(q),
            order_by: q
                .get("order_by")
                .and_then(J::as_array)
                .map(|a| a.iter().map(|o| Order { target: column_ref(o), descending: o.get("desc").and_then(J::as_bool).unwrap_or(false) }).collect())
                .unwrap_or_default(),
            limit: q.get("limit").and_then(J::as_u64).map(|l| l as u32),
            for_update: q.get("for_update").and_then(J::as_bool).unwrap_or(false),
        }));
    }
    if let Some(q) = st.get("insert") {
        let on_conflict = q.get("on_conflict").map(|oc| OnConflict {
            target: strings(oc, "target"),
            action: match oc.get("update") {
                Some(_) => ConflictAction::DoUpdate(strings(oc, "update")),
                None => ConflictAction::DoNothing,
            },
        });
        return Some(Statement::Insert(InsertQuery {
            table: s(q, "table"),
            columns: strings(q, "columns"),
            rows: q
                .get("rows")
                .and_then(J::as_array)
                .map(|a| a.iter().map(|r| r.as_array().map(|r| r.iter().map(value).collect()).unwrap_or_default()).collect())
                .unwrap_or_default(),
            on_conflict,
            returning: strings(q, "returning"),
        }));
    }
    if let Some(q) = st.get("update") {
        let set = q
            .get("set")
            .and_then(J::as_object)
            .map(|m| m.iter().map(|(k, v)| Assignment { column: k.clone(), value: value(v) }).collect())
            .unwrap_or_default();
        return Some(Statement::Update(UpdateQuery { table: s(q, "table"), set, filters: filters(q), returning: strings(q, "returning") }));
    }
    if let Some(q) = st.get("delete") {
        return Some(Statement::Delete(DeleteQuery { table: s(q, "table"), filters: filters(q), returning: strings(q, "returning") }));
    }
    if let Some(k) = st.get("lock") {
        return Some(Statement::Lock(k.as_str().unwrap_or_default().to_string()));
    }
    if let Some(k) = st.get("try_lock") {
        return Some(Statement::TryLock(k.as_str().unwrap_or_default().to_string()));
    }
    None
}

fn rows_json(r: &db::Rows) -> J {
    json!({
        "columns": r.columns,
        "rows": r.rows.iter().map(|row| row.iter().map(value_to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "affected": r.affected,
    })
}

fn step(st: &J) -> J {
    // `{"batch": [steps…]}`: the steps as one `tenant-db.batch` call.
    if let Some(steps) = st.get("batch").and_then(J::as_array) {
        let statements: Vec<Statement> = steps.iter().filter_map(statement).collect();
        return match db::batch(&statements) {
            Ok(all) => json!({ "ok": all.iter().map(rows_json).collect::<Vec<_>>() }),
            Err(e) => {
                let mut j = db_err(e.error);
                j["index"] = e.index.into();
                j
            }
        };
    }
    match statement(st) {
        Some(Statement::Select(q)) => return rows(db::select(&q)),
        Some(Statement::Insert(q)) => return rows(db::insert(&q)),
        Some(Statement::Update(q)) => return rows(db::update(&q)),
        Some(Statement::Delete(q)) => return rows(db::delete(&q)),
        Some(Statement::Lock(k)) => {
            return match db::lock(&k) {
                Ok(()) => json!({ "ok": null }),
                Err(e) => db_err(e),
            }
        }
        Some(Statement::TryLock(k)) => {
            return match db::try_lock(&k) {
                Ok(got) => json!({ "ok": got }),
                Err(e) => db_err(e),
            }
        }
        None => {}
    }
    if let Some(h) = st.get("http") {
        let req = OutgoingRequest {
            method: h.get("method").and_then(J::as_str).unwrap_or("GET").to_string(),
            url: s(h, "url"),
            headers: h
                .get("headers")
                .and_then(J::as_object)
                .map(|m| m.iter().map(|(k, v)| Header { name: k.clone(), value: v.as_str().unwrap_or_default().to_string() }).collect())
                .unwrap_or_default(),
            body: s(h, "body").into_bytes(),
        };
        return match http::send(&req) {
            Ok(r) => json!({ "ok": {
                "status": r.status,
                "headers": r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect::<Vec<_>>(),
                "body": String::from_utf8_lossy(&r.body),
            }}),
            Err(e) => http_err(e),
        };
    }
    if let Some(m) = st.get("log") {
        sdk::log::info(m.as_str().unwrap_or_default(), &[("probe", "1")]);
        println!("stdout says {}", m.as_str().unwrap_or_default());
        return json!({ "ok": null });
    }
    if st.get("context").is_some() {
        let c = context::get();
        return json!({ "ok": {
            "org_id": c.org_id, "user_id": c.user_id, "request_id": c.request_id,
            "route_id": c.route_id, "plugin_name": c.plugin_name, "plugin_version": c.plugin_version,
            "role": format!("{:?}", c.role),
        }});
    }
    if st.get("env").is_some() {
        // What WASI lets us see of the host: nothing. (No filesystem call here: a component
        // importing `wasi:filesystem` is refused at upload, which the contract suite checks.)
        let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        let args: Vec<String> = std::env::args().collect();
        return json!({ "ok": { "env": vars, "args": args } });
    }
    json!({ "err": "unknown-step" })
}

impl sdk::Guest for Probe {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let program = req.json_value()?;
        let results: Vec<J> = program.get("steps").and_then(J::as_array).map(|a| a.iter().map(step).collect()).unwrap_or_default();
        // Job attempts (webhook adapters): fail until the attempt numbered `succeed_on_attempt`.
        if let Some(n) = program.get("succeed_on_attempt").and_then(J::as_i64) {
            let attempt: i64 = req.header("x-job-attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
            if attempt < n {
                return Err(sdk::failed(&format!("probe fails attempt {attempt} of {n}")));
            }
        }
        match program.get("then").and_then(J::as_str).unwrap_or("ok") {
            "trap" => panic!("probe asked to trap"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            // The results ride along in `details`: a handler error rolls back, so this is how
            // a step's database error can be read without the invocation committing.
            "error" => Err(HandlerError::Conflict(sdk::Problem {
                code: Some("PROBE_CONFLICT".into()),
                message: "probe asked for an error".into(),
                details: Some(json!({ "results": results }).to_string()),
            })),
            _ => sdk::json(200, &json!({ "results": results })),
        }
    }
}

sdk::export_plugin!(Probe);
