//! Fuzz targets for the parsers that face the network and the operator, on the stable
//! toolchain: `bolero` runs each one under plain `cargo test`, first over its committed corpus
//! (`src/__fuzz__/<target>/corpus/`, one input per file), then on inputs it generates for a
//! second (`BOLERO_RANDOM_TEST_TIME_MS` changes that; `docs/fuzzing.md` has the longer run).
//!
//! Random bytes rarely get past a parser's first check, so each byte-level target also runs on
//! *mutations of its corpus* (`<target>_mutated`: a corpus entry with random edits, tokens from
//! the target's dictionary among them), which is how a parser's deeper states are reached
//! without a coverage-guided engine.
//!
//! | target | input | property |
//! |---|---|---|
//! | `payload_json` | a request body | the payload phase's parse and tenant check never panic; a refusal is a 4xx (`INVALID_JSON`, `TENANT_MISMATCH`); what it accepts, `serde_json` reads identically, without U+0000 |
//! | `webhook_delivery` | `standard`/`hmac` line, header lines, blank line, body | signature checks never panic and accept only what re-signing proves authentic; identifying the event is a value without control characters or a 4xx |
//! | `policy_loader` | one policy file | `PolicySet::from_sources` never panics; a refusal is `Error::Policy` naming the file |
//! | `structured_sql` | a tenant-db call as JSON (`contract-probe`'s step format) | the builder never panics; what it builds keeps every isolation invariant of the golden tests and splices nothing but schema names |
//! | `structured_sql_typed` | generated calls | as `structured_sql` |

use std::path::PathBuf;

use bolero::generator::TypeGenerator;
use serde_json::Value;
use uuid::Uuid;

use crate::db::structured::{self, tests as golden, Statement};
use crate::error::{ApiError, Code, Error};
use crate::phases::payload;
use crate::plugin::bindings::tenant_db::{
    Assignment, ColumnRef, Comparison, ConflictAction, DbError, DeleteQuery, Filter, InsertQuery, OnConflict, Order, SelectQuery,
    UpdateQuery, Value as DbValue,
};
use crate::policy::{PolicySet, Provider};
use crate::webhooks::verify;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/__fuzz__").join(target).join("corpus")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "the corpus of {target} is empty");
    inputs
}

/// Random edits of one corpus entry.
#[derive(Debug, TypeGenerator)]
struct Mutation {
    entry: u16,
    edits: Vec<Edit>,
}

#[derive(Debug, TypeGenerator)]
enum Edit {
    /// A token of the target's dictionary.
    Insert { at: u16, token: u8 },
    Byte { at: u16, value: u8 },
    Remove { at: u16, len: u8 },
    /// A copy of some bytes of the input elsewhere (repeats keys, nests structures).
    Copy { from: u16, len: u8, at: u16 },
    Truncate { at: u16 },
}

impl Mutation {
    fn apply(&self, corpus: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
        let mut b = corpus[self.entry as usize % corpus.len()].clone();
        let pos = |at: u16, len: usize| at as usize % (len + 1);
        for e in &self.edits {
            match *e {
                Edit::Insert { at, token } => {
                    let at = pos(at, b.len());
                    let t = dictionary[token as usize % dictionary.len()];
                    b.splice(at..at, t.iter().copied());
                }
                Edit::Byte { at, value } if !b.is_empty() => {
                    let at = at as usize % b.len();
                    b[at] = value;
                }
                Edit::Byte { .. } => {}
                Edit::Remove { at, len } => {
                    let at = pos(at, b.len());
                    let end = (at + len as usize).min(b.len());
                    b.drain(at..end);
                }
                Edit::Copy { from, len, at } => {
                    let from = pos(from, b.len());
                    let end = (from + len as usize).min(b.len());
                    let piece = b[from..end].to_vec();
                    let at = pos(at, b.len());
                    b.splice(at..at, piece);
                }
                Edit::Truncate { at } => b.truncate(pos(at, b.len())),
            }
        }
        b
    }
}

/// The corpus as it is plus random bytes, then mutations of the corpus.
fn fuzz_bytes(target: &str, dictionary: &[&[u8]], property: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    run_bytes(target, &property);
    let corpus = corpus(target);
    run_mutated(&format!("{target}_mutated"), &corpus, dictionary, &property);
}

fn run_bytes(target: &str, property: &(impl Fn(&[u8]) + std::panic::RefUnwindSafe)) {
    bolero::check!(name = target).for_each(|input: &[u8]| property(input));
}

fn run_mutated(name: &str, corpus: &[Vec<u8>], dictionary: &[&[u8]], property: &(impl Fn(&[u8]) + std::panic::RefUnwindSafe)) {
    bolero::check!(name = name)
        .with_type::<Mutation>()
        .for_each(|m: &Mutation| property(&m.apply(corpus, dictionary)));
}

fn client_error(e: &ApiError) -> bool {
    e.code.status().is_client_error()
}

// ---------------------------------------------------------------------------------------------
// payload_json

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn payload_json(input: &[u8]) {
    let org = Uuid::from_u128(0x0b9e5a1c_4d2f_4e6a_9c3b_7f1e2d3c4b5a);
    let lenient = serde_json::from_slice::<Value>(input).ok();
    match payload::parse_json(input) {
        Ok(v) => {
            assert_eq!(lenient.as_ref(), Some(&v), "serde_json reads this body differently");
            assert!(!has_nul(&v), "U+0000 accepted");
            if let Err(e) = payload::check_tenant_fields(&v, org, "fuzz") {
                assert_eq!(e.code, Code::TenantMismatch, "{e:?}");
            }
        }
        Err(e) => {
            assert!(client_error(&e) && e.code == Code::InvalidJson, "{e:?}");
            let details = e.details.as_ref().expect("INVALID_JSON has details");
            assert!(details["line"].is_u64() && details["column"].is_u64(), "{details}");
            // What serde_json accepts is refused only for a duplicate key or U+0000 (which a
            // later duplicate may have hidden from serde_json's value).
            if let Some(v) = &lenient {
                let duplicate = details.get("duplicate_key").is_some();
                let nul = has_nul(v) || input.windows(6).any(|w| w == b"\\u0000");
                assert!(duplicate || nul, "refused a body serde_json accepts: {e:?}");
            }
        }
    }
}

#[test]
fn fuzz_payload_json() {
    fuzz_bytes(
        "payload_json",
        &[b"\"", b"\\u0000", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"\"org_id\"", b"\"tenant_id\": ", b"1e999", b"-0", b"null", b"\x00", b"\xff", b"\\ud800"],
        payload_json,
    );
}

// ---------------------------------------------------------------------------------------------
// webhook_delivery

const KEYS: [&[u8]; 2] = [b"fuzz-key-old", b"fuzz-key-new"];
/// The clock of every delivery in the corpus.
const NOW: i64 = 1_700_000_000;

fn generic_provider() -> Provider {
    Provider {
        name: "generic".into(),
        route: Some("webhook_generic".into()),
        signature_header: Some("x-webhook-signature".into()),
        event_key: crate::policy::EventKey::all_of(&["/id", "/type"]),
        event_type: vec!["/type".into()],
        max_attempts: 5,
        retry_base_ms: 1000,
        capability: None,
        base_url: None,
        pace: None,
        verify: None,
        chain: Vec::new(),
        source: "fuzz".into(),
    }
}

fn smartlead_provider() -> Provider {
    Provider {
        name: "smartlead".into(),
        signature_header: None,
        event_key: crate::policy::EventKey::first_of(&[&["/reply_message/message_id", "/event_type"], &["/stats_id", "/event"]]),
        event_type: vec!["/event_type".into(), "/event".into()],
        verify: Some("smartlead".into()),
        chain: Vec::new(),
        ..generic_provider()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Standard,
    Hmac,
    Smartlead,
}

/// `standard`, `hmac` or `smartlead`, then `name: value` lines, a blank line, and the body.
fn delivery(input: &[u8]) -> Option<(Mode, http::HeaderMap, &[u8])> {
    let split = input.windows(2).position(|w| w == b"\n\n")?;
    let (head, body) = (&input[..split], &input[split + 2..]);
    let mut lines = head.split(|b| *b == b'\n');
    let standard = match lines.next()? {
        b"standard" => Mode::Standard,
        b"hmac" => Mode::Hmac,
        b"smartlead" => Mode::Smartlead,
        _ => return None,
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let at = line.iter().position(|b| *b == b':')?;
        let name = http::HeaderName::from_bytes(line[..at].trim_ascii()).ok()?;
        // As hyper would have it: values it refuses never reach the gateway.
        let value = http::HeaderValue::from_bytes(line[at + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    Some((standard, headers, body))
}

fn webhook_delivery(input: &[u8]) {
    let Some((mode, headers, body)) = delivery(input) else { return };
    let provider = if mode == Mode::Smartlead { smartlead_provider() } else { generic_provider() };
    let standard = mode == Mode::Standard;
    if mode == Mode::Smartlead {
        if verify::smartlead(&KEYS, &headers, body).is_ok() {
            let signed = verify::hmac_hex(&KEYS, &headers, verify::SMARTLEAD_SIGNATURE, body).is_ok();
            let secret = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("secret_key")?.as_str().map(str::to_string));
            assert!(signed || secret.is_some_and(|s| KEYS.contains(&s.as_bytes())), "accepted a smartlead delivery with neither proof");
        }
    } else if standard {
        if let Ok(id) = verify::standard(&KEYS, &headers, body, NOW) {
            let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().trim().parse().unwrap();
            assert!((NOW - ts).abs() <= verify::TOLERANCE_SECS);
            let sent = headers["webhook-signature"].to_str().unwrap();
            let authentic = KEYS.iter().any(|k| {
                let sig = verify::sign_standard(k, id, ts, body);
                sent.split(' ').any(|s| s == sig)
            });
            // Base64 has one spelling per value here (the padding bits are checked), so
            // re-signing must reproduce an entry exactly.
            assert!(authentic, "accepted a signature re-signing does not reproduce");
            assert!(id.len() <= 256);
        }
    } else if verify::hmac_hex(&KEYS, &headers, "x-webhook-signature", body).is_ok() {
        let sent = headers["x-webhook-signature"].to_str().unwrap().trim();
        let sent = hex::decode(sent.strip_prefix("sha256=").unwrap_or(sent)).unwrap();
        assert!(KEYS.iter().any(|k| hex::decode(verify::sign_hex(k, body)).unwrap() == sent), "accepted a forged hmac");
    }
    // What runs once a delivery is authentic, run whether or not this one is (the signature is
    // no defence against the provider's own body): a stored identity or a 4xx. The id as
    // `verify::standard` reads it.
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    identified(crate::native::webhooks::identify(if standard { id } else { None }, body, &provider));
}

fn identified(r: Result<crate::native::webhooks::Identity, ApiError>) {
    match r {
        Ok(i) => {
            assert!(!i.event_key.chars().any(char::is_control), "{i:?}");
            assert!(!i.event_type.as_deref().is_some_and(|t| t.chars().any(char::is_control)), "{i:?}");
        }
        Err(e) => assert!(client_error(&e), "{e:?}"),
    }
}

#[test]
fn fuzz_webhook_delivery() {
    fuzz_bytes(
        "webhook_delivery",
        &[b"\\u0000", b"\t", b"\n", b"\n\n", b" ", b"v1,", b"sha256=", b"=", b"webhook-id: ", b"\"id\": ", b"\"type\": ", b"\\u0085", b"\xc2\x85"],
        webhook_delivery,
    );
}

// ---------------------------------------------------------------------------------------------
// policy_loader

fn policy_loader(input: &[u8]) {
    let text = String::from_utf8_lossy(input).into_owned();
    match PolicySet::from_sources(&[("fuzz.toml".to_string(), text.clone())]) {
        Ok(set) => assert!(set.plans.contains_key(&set.default_plan), "a default plan that is not a plan"),
        Err(Error::Policy { file, reason }) => {
            assert!(file.starts_with("fuzz.toml"), "{file}");
            assert!(!reason.is_empty(), "no reason given for {text:?}");
        }
        Err(other) => panic!("not a policy error: {other:?}"),
    }
}

#[test]
fn fuzz_policy_loader() {
    fuzz_bytes(
        "policy_loader",
        &[b"[[route]]\n", b"[route.sandbox]\n", b"[route.grants]\n", b"[plans.p]\n", b"\"", b"=", b"\n", b"{*rest}", b"{id}", b"/", b"\"64KiB\"", b"18446744073709551616", b"-1", b"0", b"\"\\u0000\"", b"[", b"]"],
        policy_loader,
    );
}

// ---------------------------------------------------------------------------------------------
// structured_sql

fn strings(v: &Value, k: &str) -> Vec<String> {
    v.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn db_value(v: &Value) -> DbValue {
    let Value::Object(m) = v else { return DbValue::Null };
    let Some((k, x)) = m.iter().next() else { return DbValue::Null };
    let s = || x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    match k.as_str() {
        "bool" => DbValue::Boolean(x.as_bool().unwrap_or(false)),
        "int" => DbValue::Integer(x.as_i64().unwrap_or(i64::MIN)),
        "float" => DbValue::Float(x.as_f64().unwrap_or(f64::NAN)),
        "json" => DbValue::Json(s()),
        "uuid" => DbValue::Uuid(s()),
        "timestamp" => DbValue::Timestamp(s()),
        _ => DbValue::Text(s()),
    }
}

fn column_ref(v: &Value) -> ColumnRef {
    ColumnRef { column: text(v, "column"), path: strings(v, "path") }
}

fn filters(q: &Value) -> Vec<Filter> {
    let op = |f: &Value| match text(f, "op").as_str() {
        "ne" => Comparison::Ne,
        "lt" => Comparison::Lt,
        "le" => Comparison::Le,
        "gt" => Comparison::Gt,
        "ge" => Comparison::Ge,
        "is-null" => Comparison::IsNull,
        "is-not-null" => Comparison::IsNotNull,
        _ => Comparison::Eq,
    };
    let all = q.get("filters").and_then(Value::as_array).cloned().unwrap_or_default();
    all.iter().map(|f| Filter { target: column_ref(f), op: op(f), value: db_value(f.get("value").unwrap_or(&Value::Null)) }).collect()
}

/// One call in `contract-probe`'s step format.
fn call(step: &Value) -> Option<Call> {
    if let Some(q) = step.get("select") {
        return Some(Call::Select(SelectQuery {
            table: text(q, "table"),
            columns: strings(q, "columns"),
            filters: filters(q),
            order_by: q
                .get("order_by")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|o| Order { target: column_ref(o), descending: o.get("desc").and_then(Value::as_bool).unwrap_or(false) }).collect())
                .unwrap_or_default(),
            limit: q.get("limit").and_then(Value::as_u64).map(|l| l as u32),
            for_update: q.get("for_update").and_then(Value::as_bool).unwrap_or(false),
        }));
    }
    if let Some(q) = step.get("insert") {
        let rows = q.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
        return Some(Call::Insert(InsertQuery {
            table: text(q, "table"),
            columns: strings(q, "columns"),
            rows: rows.iter().map(|r| r.as_array().map(|r| r.iter().map(db_value).collect()).unwrap_or_default()).collect(),
            on_conflict: q.get("on_conflict").map(|oc| OnConflict {
                target: strings(oc, "target"),
                action: match oc.get("update") {
                    Some(_) => ConflictAction::DoUpdate(strings(oc, "update")),
                    None => ConflictAction::DoNothing,
                },
            }),
            returning: strings(q, "returning"),
        }));
    }
    if let Some(q) = step.get("update") {
        let set = q.get("set").and_then(Value::as_object).cloned().unwrap_or_default();
        return Some(Call::Update(UpdateQuery {
            table: text(q, "table"),
            set: set.iter().map(|(k, v)| Assignment { column: k.clone(), value: db_value(v) }).collect(),
            filters: filters(q),
            returning: strings(q, "returning"),
        }));
    }
    let q = step.get("delete")?;
    Some(Call::Delete(DeleteQuery { table: text(q, "table"), filters: filters(q), returning: strings(q, "returning") }))
}

#[derive(Debug)]
enum Call {
    Select(SelectQuery),
    Insert(InsertQuery),
    Update(UpdateQuery),
    Delete(DeleteQuery),
}

fn build(call: &Call, global_id: bool, cap: u32) {
    let schema = if global_id { golden::schema_with_global_id() } else { golden::schema() };
    let t = golden::TENANT;
    let built: Result<Statement, DbError> = match call {
        Call::Select(q) => structured::select(&schema, t, q, cap),
        Call::Insert(q) => structured::insert(&schema, t, q),
        Call::Update(q) => structured::update(&schema, t, q),
        Call::Delete(q) => structured::delete(&schema, t, q),
    };
    // A refusal is a `DbError`: a variant of the contract the plugin can handle, by type.
    let Ok(st) = built else { return };
    golden::invariants(&st);
    golden::binds(&st);
    // Identifiers come from the schema, values are bound and JSON path keys (spliced as
    // literals, their alphabet without a quote) stay inside their quotes: outside the literals,
    // nothing a plugin wrote can end a statement or start a comment.
    let outside_literals: String = st.sql.split('\'').step_by(2).collect();
    for forbidden in [";", "--", "/*", "\0"] {
        assert!(!outside_literals.contains(forbidden), "{forbidden:?} in {}", st.sql);
    }
    if global_id {
        if let Call::Insert(q) = call {
            assert!(!q.columns.iter().any(|c| c == "id"), "a database-assigned column was written");
        }
    }
}

fn structured_sql(input: &[u8]) {
    let Ok(step) = serde_json::from_slice::<Value>(input) else { return };
    let Some(c) = call(&step) else { return };
    let cap = step.get("cap").and_then(Value::as_u64).map_or(100, |c| c as u32);
    build(&c, step.get("global_id").is_some(), cap);
}

#[test]
fn fuzz_structured_sql() {
    fuzz_bytes(
        "structured_sql",
        &[b"\"", b"\\\"", b"'", b";", b"--", b"tenant_id", b"\"props\"", b"\"created_at\"", b"\"we\\\"ird\"", b"\"odd\\\"col\"", b"{\"text\": \"x\"}", b"{\"int\": 1}", b"{\"json\": \"{}\"}", b"null", b"[", b"]", b",", b"\"path\": [\"a\"]", b"4294967295"],
        structured_sql,
    );
}

/// Names and values from a small pool, so generated calls reach past the first lookup.
#[derive(Debug, TypeGenerator)]
struct Typed {
    op: u8,
    table: u8,
    columns: Vec<u8>,
    values: Vec<(u8, u8)>,
    filters: Vec<TypedFilter>,
    order: Vec<(u8, bool)>,
    limit: Option<u32>,
    cap: u32,
    flags: u8,
}

#[derive(Debug, TypeGenerator)]
struct TypedFilter {
    column: u8,
    path: Vec<u8>,
    op: u8,
    value: (u8, u8),
}

const TABLES: &[&str] = &["contacts", "we\"ird", "nope", "tenant_id", "contacts; DROP TABLE x"];
const COLUMNS: &[&str] = &["id", "name", "email", "age", "score", "balance", "active", "props", "created_at", "tenant_id", "odd\"col", "nope", "name\"; --"];
const KEYS_JSON: &[&str] = &["a", "idemKey", "a'b", "", "x-y_z", "é", "1"];

fn typed_value(kind: u8, n: u8) -> DbValue {
    let texts = ["", "x", "x'); DROP TABLE contacts; --", "\0", "2024-01-01T00:00:00Z", "{}", "0b9e5a1c-4d2f-4e6a-9c3b-7f1e2d3c4b5a"];
    let t = texts[n as usize % texts.len()].to_string();
    match kind % 8 {
        0 => DbValue::Null,
        1 => DbValue::Boolean(n.is_multiple_of(2)),
        2 => DbValue::Integer(i64::from(n as i8).saturating_mul(i64::MAX / 127)),
        3 => DbValue::Float([0.0, -0.0, f64::NAN, f64::INFINITY, 1e308][n as usize % 5]),
        4 => DbValue::Text(t),
        5 => DbValue::Json(t),
        6 => DbValue::Uuid(t),
        _ => DbValue::Timestamp(t),
    }
}

impl Typed {
    fn call(&self) -> Call {
        let pick = |pool: &[&str], i: u8| pool[i as usize % pool.len()].to_string();
        let table = pick(TABLES, self.table);
        let columns: Vec<String> = self.columns.iter().map(|c| pick(COLUMNS, *c)).collect();
        let ops = [Comparison::Eq, Comparison::Ne, Comparison::Lt, Comparison::Le, Comparison::Gt, Comparison::Ge, Comparison::IsNull, Comparison::IsNotNull];
        let filters = self
            .filters
            .iter()
            .map(|f| Filter {
                target: ColumnRef { column: pick(COLUMNS, f.column), path: f.path.iter().map(|p| pick(KEYS_JSON, *p)).collect() },
                op: ops[f.op as usize % ops.len()],
                value: typed_value(f.value.0, f.value.1),
            })
            .collect();
        let values: Vec<DbValue> = self.values.iter().map(|(k, n)| typed_value(*k, *n)).collect();
        let returning = if self.flags & 1 == 1 { columns.clone() } else { Vec::new() };
        match self.op % 4 {
            0 => Call::Select(SelectQuery {
                table,
                columns,
                filters,
                order_by: self.order.iter().map(|(c, d)| Order { target: ColumnRef { column: pick(COLUMNS, *c), path: Vec::new() }, descending: *d }).collect(),
                limit: self.limit,
                for_update: self.flags & 2 == 2,
            }),
            1 => {
                let width = columns.len().max(1);
                let rows = values.chunks(width).map(<[DbValue]>::to_vec).collect();
                let on_conflict = (self.flags & 4 == 4).then(|| OnConflict {
                    target: columns.iter().take(1).cloned().collect(),
                    action: if self.flags & 8 == 8 { ConflictAction::DoUpdate(columns.clone()) } else { ConflictAction::DoNothing },
                });
                Call::Insert(InsertQuery { table, columns, rows, on_conflict, returning })
            }
            2 => Call::Update(UpdateQuery {
                table,
                set: columns.iter().zip(values).map(|(c, value)| Assignment { column: c.clone(), value }).collect(),
                filters,
                returning,
            }),
            _ => Call::Delete(DeleteQuery { table, filters, returning }),
        }
    }
}

#[test]
fn fuzz_structured_sql_typed() {
    bolero::check!(name = "structured_sql_typed")
        .with_type::<Typed>()
        .for_each(|t: &Typed| build(&t.call(), t.flags & 16 == 16, t.cap));
}

/// The webhook seeds reach past the signature check: the ones meant to be authentic are.
#[test]
fn the_webhook_corpus_holds_authentic_deliveries() {
    let dir = corpus_dir("webhook_delivery");
    for (name, authentic) in [
        ("standard_ok", true),
        ("standard_rotated", true),
        ("standard_nul_type", true),
        ("standard_tab_id", true),
        ("standard_not_json", true),
        ("standard_wrong_key", false),
        ("hmac_ok", true),
        ("hmac_prefixed", true),
        ("hmac_nul_id", true),
        ("hmac_nul_type", true),
        ("hmac_c1_type", true),
        ("hmac_forged", false),
        ("smartlead_body_secret", true),
        ("smartlead_stats", true),
        ("smartlead_hash_wrong_secret", false),
        ("smartlead_array_secret", false),
    ] {
        let input = std::fs::read(dir.join(name)).unwrap();
        let (mode, headers, body) = delivery(&input).unwrap_or_else(|| panic!("{name} does not parse"));
        let ok = match mode {
            Mode::Standard => verify::standard(&KEYS, &headers, body, NOW).is_ok(),
            Mode::Hmac => verify::hmac_hex(&KEYS, &headers, "x-webhook-signature", body).is_ok(),
            Mode::Smartlead => verify::smartlead(&KEYS, &headers, body).is_ok(),
        };
        assert_eq!(ok, authentic, "{name}");
    }
}
