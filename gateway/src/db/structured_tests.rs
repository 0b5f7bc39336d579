//! Golden tests for the structured-query builder: the exact SQL text and the exact bind list of
//! every operation, and the exact `DbError` of every refusal. No database: statements are built
//! against a hand-made [`Schema`].
//!
//! `PgArguments` cannot be read back, so the builder keeps a test-only record of what it bound
//! ([`Bound`]); [`binds`] re-encodes that record and checks it against the real arguments byte
//! for byte, so the record cannot drift from what is sent to PostgreSQL.

use std::collections::{BTreeSet, HashMap};

use sqlx::postgres::PgArguments;
use sqlx::Arguments;
use uuid::Uuid;

use super::*;
use crate::plugin::bindings::tenant_db::{Assignment, OnConflict, Order};

// ---------------------------------------------------------------------------------------------
// The bind record (used by the builder under cfg(test)).

/// One bound parameter, as the builder passed it to `PgArguments::add`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound {
    Uuid(Uuid),
    /// `None::<String>`: a NULL typed `text`.
    NullText,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Bound {
    /// How `Builder::bind` binds a plugin value.
    pub(crate) fn of(v: &Value) -> Bound {
        match v {
            Value::Null => Bound::NullText,
            Value::Boolean(b) => Bound::Bool(*b),
            Value::Integer(i) => Bound::Int(*i),
            Value::Float(f) => Bound::Float(*f),
            Value::Text(s) | Value::Json(s) | Value::Uuid(s) | Value::Timestamp(s) => Bound::Text(s.clone()),
            Value::Earlier(_) | Value::JsonFilled(_) => unreachable!("read by the statement, never bound"),
        }
    }
}

fn encode(bound: &[Bound]) -> PgArguments {
    let mut a = PgArguments::default();
    for b in bound {
        let r = match b {
            Bound::Uuid(u) => a.add(*u),
            Bound::NullText => a.add(None::<String>),
            Bound::Bool(v) => a.add(*v),
            Bound::Int(v) => a.add(*v),
            Bound::Float(v) => a.add(*v),
            Bound::Text(s) => a.add(s.clone()),
        };
        r.unwrap();
    }
    a
}

/// The statement's binds, after checking the record against the real encoded arguments.
pub(crate) fn binds(st: &Statement) -> &[Bound] {
    assert_eq!(st.args.len(), st.bound.len(), "bind record and PgArguments disagree on the count");
    assert_eq!(
        format!("{:?}", st.args),
        format!("{:?}", encode(&st.bound)),
        "bind record and PgArguments disagree on types or bytes"
    );
    &st.bound
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

pub(crate) const TENANT: Uuid = Uuid::from_u128(0x0b9e5a1c_4d2f_4e6a_9c3b_7f1e2d3c4b5a);
const CAP: u32 = 100;
const TS_OUT: &str = r#"to_char("created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;
/// Plugin-supplied strings that would break out of a literal or an identifier if spliced.
const EVIL: &str = "x'); DROP TABLE contacts; --";
const EVIL2: &str = r#"O'Brien "the" \ $1 */ /*"#;

fn column(kind: Kind, sql_type: &str) -> Column {
    Column { kind, sql_type: sql_type.to_string(), db_assigned: false }
}

/// `contacts` has a column of every kind (and two Text / Float types); `we"ird` has names that
/// need their quotes doubled.
pub(crate) fn schema() -> Schema {
    let mut contacts = HashMap::new();
    for (name, kind, ty) in [
        ("tenant_id", Kind::Uuid, "uuid"),
        ("id", Kind::Uuid, "uuid"),
        ("name", Kind::Text, "text"),
        ("email", Kind::Text, "citext"),
        ("age", Kind::Int, "int4"),
        ("score", Kind::Float, "float8"),
        ("balance", Kind::Float, "numeric"),
        ("active", Kind::Bool, "bool"),
        ("props", Kind::Json, "jsonb"),
        ("created_at", Kind::Timestamp, "timestamptz"),
    ] {
        contacts.insert(name.to_string(), column(kind, ty));
    }
    let mut weird = HashMap::new();
    weird.insert("tenant_id".to_string(), column(Kind::Uuid, "uuid"));
    weird.insert("odd\"col".to_string(), column(Kind::Text, "my\"type"));
    let mut tables = HashMap::new();
    tables.insert("contacts".to_string(), contacts);
    tables.insert("we\"ird".to_string(), weird);
    Schema { tables, ..Default::default() }
}

/// [`schema`] as `Schema::load` reads a table with a global primary key: `contacts.id` is in a
/// unique constraint without `tenant_id`, so plugins may read it but never give it a value.
pub(crate) fn schema_with_global_id() -> Schema {
    let mut schema = schema();
    schema.tables.get_mut("contacts").unwrap().get_mut("id").unwrap().db_assigned = true;
    schema.global_constraints.insert(s("contacts_pkey"));
    schema
}

fn s(v: &str) -> String {
    v.to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|c| c.to_string()).collect()
}

fn col(c: &str) -> ColumnRef {
    ColumnRef { column: s(c), path: Vec::new() }
}

fn path(c: &str, keys: &[&str]) -> ColumnRef {
    ColumnRef { column: s(c), path: strings(keys) }
}

fn filter(target: ColumnRef, op: Comparison, value: Value) -> Filter {
    Filter { target, op, value }
}

fn eq(c: &str, value: Value) -> Filter {
    filter(col(c), Comparison::Eq, value)
}

fn text(v: &str) -> Value {
    Value::Text(s(v))
}

fn t(v: &str) -> Bound {
    Bound::Text(s(v))
}

const T: Bound = Bound::Uuid(TENANT);

fn sel(table: &str, columns: &[&str]) -> SelectQuery {
    SelectQuery {
        table: s(table),
        columns: strings(columns),
        filters: Vec::new(),
        order_by: Vec::new(),
        limit: None,
        for_update: false,
    }
}

fn ins(table: &str, columns: &[&str], rows: Vec<Vec<Value>>) -> InsertQuery {
    InsertQuery { table: s(table), columns: strings(columns), rows, on_conflict: None, returning: Vec::new() }
}

fn upd(table: &str, set: Vec<(&str, Value)>) -> UpdateQuery {
    UpdateQuery {
        table: s(table),
        set: set.into_iter().map(|(c, value)| Assignment { column: s(c), value }).collect(),
        filters: Vec::new(),
        returning: Vec::new(),
    }
}

fn del(table: &str) -> DeleteQuery {
    DeleteQuery { table: s(table), filters: Vec::new(), returning: Vec::new() }
}

fn kinds(v: &[(&str, Kind)]) -> Vec<(String, Kind)> {
    v.iter().map(|(c, k)| (c.to_string(), *k)).collect()
}

/// Asserts the exact SQL and binds, plus the isolation invariants every statement must hold.
#[track_caller]
fn golden(r: Check<Statement>, sql: &str, expected: &[Bound]) -> Statement {
    let st = match r {
        Ok(st) => st,
        Err(e) => panic!("refused: {}", describe(&e)),
    };
    assert_eq!(st.sql, sql);
    assert_eq!(binds(&st), expected);
    invariants(&st);
    st
}

/// Tenant isolation, independent of the golden text: the tenant is the first bind; every
/// placeholder `$1..$n` is used and no other; reads and writes are filtered by `"tenant_id" = $1`
/// joined with AND only; every inserted row carries `$1` as its `"tenant_id"`.
#[track_caller]
pub(crate) fn invariants(st: &Statement) {
    assert_eq!(st.bound.first(), Some(&T), "the tenant must be the first bind");
    assert_eq!(st.bound.iter().filter(|b| **b == T).count(), 1, "the tenant is bound once");

    let bytes = st.sql.as_bytes();
    let mut used = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits: String = st.sql[i + 1..].chars().take_while(|c| c.is_ascii_digit()).collect();
            assert!(!digits.is_empty(), "a bare $ in {}", st.sql);
            used.insert(digits.parse::<usize>().unwrap());
            i += digits.len();
        }
        i += 1;
    }
    assert_eq!(used, (1..=st.bound.len()).collect::<BTreeSet<_>>(), "placeholders of {}", st.sql);

    if st.sql.starts_with("INSERT INTO ") {
        let (head, rest) = st.sql.split_once(") VALUES (").unwrap();
        assert!(head.contains(" (\"tenant_id\", "), "tenant_id is the first column: {head}");
        let tuples = rest.split(" ON CONFLICT ").next().unwrap().split(" RETURNING ").next().unwrap();
        for tuple in tuples.split("), (") {
            assert!(tuple.starts_with("$1, "), "a row without the tenant: {tuple}");
        }
        if let Some(oc) = st.sql.split_once(" ON CONFLICT (") {
            assert!(oc.1.starts_with("\"tenant_id\", "), "conflict target without the tenant");
        }
    } else {
        assert_eq!(st.sql.matches(" WHERE \"tenant_id\" = $1").count(), 1, "{}", st.sql);
        assert!(!st.sql.contains(" OR "), "{}", st.sql);
    }
}

/// A `DbError` as text, matched exhaustively so a new variant forces these tests to be revisited.
fn describe(e: &DbError) -> String {
    match e {
        DbError::NotGranted(t) => format!("not-granted({t})"),
        DbError::UnknownTable(t) => format!("unknown-table({t})"),
        DbError::UnknownColumn(c) => format!("unknown-column({c})"),
        DbError::TenantColumnReserved => s("tenant-column-reserved"),
        DbError::Invalid(m) => format!("invalid({m})"),
        DbError::UniqueViolation(c) => format!("unique-violation({c})"),
        DbError::ConstraintViolation(c) => format!("constraint-violation({c})"),
        DbError::Timeout => s("timeout"),
        DbError::TooManyRows(n) => format!("too-many-rows({n})"),
        DbError::Unavailable => s("unavailable"),
        DbError::Aborted => s("aborted"),
    }
}

#[track_caller]
fn refused(r: Check<Statement>) -> String {
    match r {
        Ok(st) => panic!("built instead of refusing: {}", st.sql),
        Err(e) => describe(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// select

#[test]
fn select_minimal_filters_by_tenant_and_fetches_one_past_the_cap() {
    let st = golden(
        select(&schema(), TENANT, &sel("contacts", &["id", "name"]), CAP),
        r#"SELECT "id"::text, "name"::text FROM "contacts" WHERE "tenant_id" = $1 LIMIT 101"#,
        &[T],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("name", Kind::Text)]));
}

#[test]
fn select_casts_each_output_kind_for_decoding() {
    let q = sel("contacts", &["id", "name", "email", "age", "score", "balance", "active", "props", "created_at"]);
    let st = golden(
        select(&schema(), TENANT, &q, CAP),
        &format!(
            r#"SELECT "id"::text, "name"::text, "email"::text, "age"::int8, "score"::float8, "balance"::float8, "active", "props"::text, {TS_OUT} FROM "contacts" WHERE "tenant_id" = $1 LIMIT 101"#
        ),
        &[T],
    );
    assert_eq!(
        st.returns,
        kinds(&[
            ("id", Kind::Uuid),
            ("name", Kind::Text),
            ("email", Kind::Text),
            ("age", Kind::Int),
            ("score", Kind::Float),
            ("balance", Kind::Float),
            ("active", Kind::Bool),
            ("props", Kind::Json),
            ("created_at", Kind::Timestamp),
        ])
    );
}

#[test]
fn select_each_comparison() {
    let cases = [
        (Comparison::Eq, r#""age" = $2::"int4""#),
        (Comparison::Ne, r#""age" <> $2::"int4""#),
        (Comparison::Lt, r#""age" < $2::"int4""#),
        (Comparison::Le, r#""age" <= $2::"int4""#),
        (Comparison::Gt, r#""age" > $2::"int4""#),
        (Comparison::Ge, r#""age" >= $2::"int4""#),
    ];
    for (op, cond) in cases {
        let mut q = sel("contacts", &["id"]);
        q.filters = vec![filter(col("age"), op, Value::Integer(30))];
        golden(
            select(&schema(), TENANT, &q, CAP),
            &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND {cond} LIMIT 101"#),
            &[T, Bound::Int(30)],
        );
    }
}

#[test]
fn select_is_null_and_is_not_null_bind_nothing() {
    // The value is ignored (not bound), whatever it is.
    for (op, cond) in [(Comparison::IsNull, "IS NULL"), (Comparison::IsNotNull, "IS NOT NULL")] {
        for value in [Value::Null, text(EVIL), Value::Integer(1)] {
            let mut q = sel("contacts", &["id"]);
            q.filters = vec![filter(col("email"), op, value)];
            golden(
                select(&schema(), TENANT, &q, CAP),
                &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND "email" {cond} LIMIT 101"#),
                &[T],
            );
        }
    }
}

#[test]
fn select_binds_each_value_kind_cast_to_the_column_type() {
    let uuid = "6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f";
    let ts = "2024-05-06T07:08:09.123456Z";
    let cases = [
        ("active", Value::Boolean(true), "bool", Bound::Bool(true)),
        ("age", Value::Integer(-7), "int4", Bound::Int(-7)),
        ("score", Value::Integer(3), "float8", Bound::Int(3)),
        ("score", Value::Float(2.5), "float8", Bound::Float(2.5)),
        ("balance", Value::Float(-0.25), "numeric", Bound::Float(-0.25)),
        ("name", text("Ann"), "text", t("Ann")),
        ("email", text("a@example.com"), "citext", t("a@example.com")),
        ("name", Value::Uuid(s(uuid)), "text", t(uuid)),
        ("name", Value::Timestamp(s(ts)), "text", t(ts)),
        ("id", Value::Uuid(s(uuid)), "uuid", t(uuid)),
        ("id", text(uuid), "uuid", t(uuid)),
        ("created_at", Value::Timestamp(s(ts)), "timestamptz", t(ts)),
        ("created_at", text(ts), "timestamptz", t(ts)),
        ("props", Value::Json(s(r#"{"a":1}"#)), "jsonb", t(r#"{"a":1}"#)),
        ("props", text(r#"[1,2]"#), "jsonb", t("[1,2]")),
    ];
    for (c, value, ty, bound) in cases {
        let mut q = sel("contacts", &["id"]);
        q.filters = vec![eq(c, value)];
        golden(
            select(&schema(), TENANT, &q, CAP),
            &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND "{c}" = $2::"{ty}" LIMIT 101"#),
            &[T, bound],
        );
    }
}

#[test]
fn select_several_filters_are_and_joined_in_order() {
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![
        eq("active", Value::Boolean(false)),
        filter(col("age"), Comparison::Ge, Value::Integer(18)),
        filter(col("props"), Comparison::IsNotNull, Value::Null),
        filter(col("name"), Comparison::Ne, text("Bob")),
    ];
    golden(
        select(&schema(), TENANT, &q, CAP),
        r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND "active" = $2::"bool" AND "age" >= $3::"int4" AND "props" IS NOT NULL AND "name" <> $4::"text" LIMIT 101"#,
        &[T, Bound::Bool(false), Bound::Int(18), t("Bob")],
    );
}

#[test]
fn select_json_path_filters_splice_keys_and_bind_values_as_text() {
    let uuid = "6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f";
    let cases: Vec<(ColumnRef, Comparison, Value, &str, Vec<Bound>)> = vec![
        (
            path("props", &["idemKey"]),
            Comparison::Eq,
            text("k-1"),
            r#"("props" ->> 'idemKey') = $2::text"#,
            vec![T, t("k-1")],
        ),
        (
            path("props", &["a", "b", "c"]),
            Comparison::Gt,
            Value::Integer(10),
            r#"("props" -> 'a' -> 'b' ->> 'c') > $2::text"#,
            vec![T, t("10")],
        ),
        (path("props", &["f"]), Comparison::Le, Value::Float(1.5), r#"("props" ->> 'f') <= $2::text"#, vec![T, t("1.5")]),
        (
            path("props", &["ok"]),
            Comparison::Ne,
            Value::Boolean(false),
            r#"("props" ->> 'ok') <> $2::text"#,
            vec![T, t("false")],
        ),
        (path("props", &["u"]), Comparison::Eq, Value::Uuid(s(uuid)), r#"("props" ->> 'u') = $2::text"#, vec![T, t(uuid)]),
        (
            path("props", &["j"]),
            Comparison::Eq,
            Value::Json(s(r#"{"x":1}"#)),
            r#"("props" ->> 'j') = $2::text"#,
            vec![T, t(r#"{"x":1}"#)],
        ),
        (
            path("props", &["at"]),
            Comparison::Lt,
            Value::Timestamp(s("2024-01-01T00:00:00Z")),
            r#"("props" ->> 'at') < $2::text"#,
            vec![T, t("2024-01-01T00:00:00Z")],
        ),
        (path("props", &["gone"]), Comparison::IsNull, text("ignored"), r#"("props" ->> 'gone') IS NULL"#, vec![T]),
        (path("props", &["a", "here"]), Comparison::IsNotNull, Value::Null, r#"("props" -> 'a' ->> 'here') IS NOT NULL"#, vec![T]),
        (
            path("props", &["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"]),
            Comparison::Eq,
            text("deep"),
            r#"("props" -> 'k1' -> 'k2' -> 'k3' -> 'k4' -> 'k5' -> 'k6' -> 'k7' ->> 'k8') = $2::text"#,
            vec![T, t("deep")],
        ),
        (
            path("props", &["Az09_-"]),
            Comparison::Ge,
            Value::Integer(-3),
            r#"("props" ->> 'Az09_-') >= $2::text"#,
            vec![T, t("-3")],
        ),
    ];
    for (target, op, value, cond, expected) in cases {
        let mut q = sel("contacts", &["id"]);
        q.filters = vec![filter(target, op, value)];
        golden(
            select(&schema(), TENANT, &q, CAP),
            &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND {cond} LIMIT 101"#),
            &expected,
        );
    }
}

#[test]
fn select_json_path_key_of_64_characters_is_accepted() {
    let key = "k".repeat(64);
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path("props", &[&key]), Comparison::Eq, text("v"))];
    golden(
        select(&schema(), TENANT, &q, CAP),
        &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND ("props" ->> '{key}') = $2::text LIMIT 101"#),
        &[T, t("v")],
    );
}

#[test]
fn select_order_by_columns_and_json_paths() {
    let mut q = sel("contacts", &["id"]);
    q.order_by = vec![
        Order { target: col("age"), descending: true },
        Order { target: path("props", &["rank"]), descending: false },
        Order { target: path("props", &["a", "b"]), descending: true },
        Order { target: col("name"), descending: false },
    ];
    golden(
        select(&schema(), TENANT, &q, CAP),
        r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 ORDER BY "age" DESC, ("props" ->> 'rank') ASC, ("props" -> 'a' ->> 'b') DESC, "name" ASC LIMIT 101"#,
        &[T],
    );
}

#[test]
fn select_limit_is_clamped_to_the_cap_and_defaults_to_cap_plus_one() {
    let cases = [
        (None, 100, "LIMIT 101"),
        (Some(10), 100, "LIMIT 10"),
        (Some(100), 100, "LIMIT 100"),
        (Some(101), 100, "LIMIT 100"),
        (Some(u32::MAX), 100, "LIMIT 100"),
        (Some(0), 100, "LIMIT 0"),
        (None, 1, "LIMIT 2"),
        (Some(5), 1, "LIMIT 1"),
        (None, u32::MAX - 1, "LIMIT 4294967295"),
    ];
    for (limit, cap, clause) in cases {
        let mut q = sel("contacts", &["id"]);
        q.limit = limit;
        golden(
            select(&schema(), TENANT, &q, cap),
            &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 {clause}"#),
            &[T],
        );
    }
}

#[test]
fn select_cap_of_u32_max_does_not_wrap() {
    for (limit, clause) in [(None, "LIMIT 4294967296"), (Some(u32::MAX), "LIMIT 4294967295"), (Some(7), "LIMIT 7")] {
        let mut q = sel("contacts", &["id"]);
        q.limit = limit;
        golden(
            select(&schema(), TENANT, &q, u32::MAX),
            &format!(r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 {clause}"#),
            &[T],
        );
    }
}

#[test]
fn select_for_update_comes_after_the_limit() {
    let mut q = sel("contacts", &["id"]);
    q.for_update = true;
    golden(
        select(&schema(), TENANT, &q, CAP),
        r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 LIMIT 101 FOR UPDATE"#,
        &[T],
    );
}

#[test]
fn select_everything_at_once() {
    let mut q = sel("contacts", &["id", "props", "created_at"]);
    q.filters = vec![
        eq("active", Value::Boolean(true)),
        filter(path("props", &["status"]), Comparison::Ne, text("closed")),
        filter(col("created_at"), Comparison::Lt, Value::Timestamp(s("2025-01-01T00:00:00Z"))),
    ];
    q.order_by = vec![Order { target: col("created_at"), descending: true }];
    q.limit = Some(20);
    q.for_update = true;
    let st = golden(
        select(&schema(), TENANT, &q, CAP),
        &format!(
            r#"SELECT "id"::text, "props"::text, {TS_OUT} FROM "contacts" WHERE "tenant_id" = $1 AND "active" = $2::"bool" AND ("props" ->> 'status') <> $3::text AND "created_at" < $4::"timestamptz" ORDER BY "created_at" DESC LIMIT 20 FOR UPDATE"#
        ),
        &[T, Bound::Bool(true), t("closed"), t("2025-01-01T00:00:00Z")],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("props", Kind::Json), ("created_at", Kind::Timestamp)]));
}

// ---------------------------------------------------------------------------------------------
// insert

#[test]
fn insert_single_row_prepends_the_tenant() {
    let q = ins("contacts", &["name", "age"], vec![vec![text("Ann"), Value::Integer(30)]]);
    let st = golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "name", "age") VALUES ($1, $2::"text", $3::"int4")"#,
        &[T, t("Ann"), Bound::Int(30)],
    );
    assert!(st.returns.is_empty());
}

#[test]
fn insert_multiple_rows_each_carry_the_tenant() {
    let q = ins(
        "contacts",
        &["name", "age"],
        vec![
            vec![text("Ann"), Value::Integer(30)],
            vec![text("Bob"), Value::Null],
            vec![Value::Null, Value::Integer(7)],
        ],
    );
    golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "name", "age") VALUES ($1, $2::"text", $3::"int4"), ($1, $4::"text", $5::"int4"), ($1, $6::"text", $7::"int4")"#,
        &[T, t("Ann"), Bound::Int(30), t("Bob"), Bound::NullText, Bound::NullText, Bound::Int(7)],
    );
}

#[test]
fn insert_every_column_kind() {
    let q = ins(
        "contacts",
        &["id", "name", "email", "age", "score", "balance", "active", "props", "created_at"],
        vec![vec![
            Value::Uuid(s("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f")),
            text("Ann"),
            text("ann@example.com"),
            Value::Integer(41),
            Value::Float(0.5),
            Value::Integer(12),
            Value::Boolean(true),
            Value::Json(s(r#"{"tags":["a"]}"#)),
            Value::Timestamp(s("2024-05-06T07:08:09Z")),
        ]],
    );
    golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "id", "name", "email", "age", "score", "balance", "active", "props", "created_at") VALUES ($1, $2::"uuid", $3::"text", $4::"citext", $5::"int4", $6::"float8", $7::"numeric", $8::"bool", $9::"jsonb", $10::"timestamptz")"#,
        &[
            T,
            t("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f"),
            t("Ann"),
            t("ann@example.com"),
            Bound::Int(41),
            Bound::Float(0.5),
            Bound::Int(12),
            Bound::Bool(true),
            t(r#"{"tags":["a"]}"#),
            t("2024-05-06T07:08:09Z"),
        ],
    );
}

#[test]
fn insert_returning() {
    let mut q = ins("contacts", &["name"], vec![vec![text("Ann")]]);
    q.returning = strings(&["id", "age", "created_at"]);
    let st = golden(
        insert(&schema(), TENANT, &q),
        &format!(r#"INSERT INTO "contacts" ("tenant_id", "name") VALUES ($1, $2::"text") RETURNING "id"::text, "age"::int8, {TS_OUT}"#),
        &[T, t("Ann")],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("age", Kind::Int), ("created_at", Kind::Timestamp)]));
}

#[test]
fn insert_on_conflict_do_nothing_targets_tenant_first() {
    let mut q = ins("contacts", &["email", "name"], vec![vec![text("a@example.com"), text("Ann")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoNothing });
    golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "email", "name") VALUES ($1, $2::"citext", $3::"text") ON CONFLICT ("tenant_id", "email") DO NOTHING"#,
        &[T, t("a@example.com"), t("Ann")],
    );
}

#[test]
fn insert_on_conflict_do_nothing_with_a_composite_target_and_returning() {
    let mut q = ins("contacts", &["email", "name"], vec![vec![text("a@example.com"), text("Ann")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["email", "name"]), action: ConflictAction::DoNothing });
    q.returning = strings(&["id"]);
    golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "email", "name") VALUES ($1, $2::"citext", $3::"text") ON CONFLICT ("tenant_id", "email", "name") DO NOTHING RETURNING "id"::text"#,
        &[T, t("a@example.com"), t("Ann")],
    );
}

#[test]
fn insert_upsert_do_update_sets_from_excluded() {
    let mut q = ins(
        "contacts",
        &["email", "name", "age"],
        vec![vec![text("a@example.com"), text("Ann"), Value::Integer(30)], vec![text("b@example.com"), text("Bob"), Value::Integer(31)]],
    );
    q.on_conflict =
        Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoUpdate(strings(&["name", "age"])) });
    q.returning = strings(&["id", "name"]);
    let st = golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "email", "name", "age") VALUES ($1, $2::"citext", $3::"text", $4::"int4"), ($1, $5::"citext", $6::"text", $7::"int4") ON CONFLICT ("tenant_id", "email") DO UPDATE SET "name" = EXCLUDED."name", "age" = EXCLUDED."age" RETURNING "id"::text, "name"::text"#,
        &[T, t("a@example.com"), t("Ann"), Bound::Int(30), t("b@example.com"), t("Bob"), Bound::Int(31)],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("name", Kind::Text)]));
}

// ---------------------------------------------------------------------------------------------
// update

#[test]
fn update_set_binds_before_filters() {
    let mut q = upd("contacts", vec![("name", text("Ann")), ("age", Value::Integer(31))]);
    q.filters = vec![
        eq("id", Value::Uuid(s("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f"))),
        filter(path("props", &["v"]), Comparison::Ge, Value::Integer(2)),
    ];
    let st = golden(
        update(&schema(), TENANT, &q),
        r#"UPDATE "contacts" SET "name" = $2::"text", "age" = $3::"int4" WHERE "tenant_id" = $1 AND "id" = $4::"uuid" AND ("props" ->> 'v') >= $5::text"#,
        &[T, t("Ann"), Bound::Int(31), t("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f"), t("2")],
    );
    assert!(st.returns.is_empty());
}

#[test]
fn update_set_null_and_json() {
    let mut q = upd("contacts", vec![("email", Value::Null), ("props", Value::Json(s(r#"{"a":null}"#)))]);
    q.filters = vec![filter(col("email"), Comparison::IsNotNull, Value::Null)];
    golden(
        update(&schema(), TENANT, &q),
        r#"UPDATE "contacts" SET "email" = $2::"citext", "props" = $3::"jsonb" WHERE "tenant_id" = $1 AND "email" IS NOT NULL"#,
        &[T, Bound::NullText, t(r#"{"a":null}"#)],
    );
}

#[test]
fn update_returning() {
    let mut q = upd("contacts", vec![("active", Value::Boolean(false))]);
    q.filters = vec![filter(col("age"), Comparison::Lt, Value::Integer(18))];
    q.returning = strings(&["id", "active", "score"]);
    let st = golden(
        update(&schema(), TENANT, &q),
        r#"UPDATE "contacts" SET "active" = $2::"bool" WHERE "tenant_id" = $1 AND "age" < $3::"int4" RETURNING "id"::text, "active", "score"::float8"#,
        &[T, Bound::Bool(false), Bound::Int(18)],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("active", Kind::Bool), ("score", Kind::Float)]));
}

#[test]
fn update_without_filters_is_built_and_still_scoped_to_the_tenant() {
    // Not refused: it touches every row of the tenant (and only the tenant's).
    golden(
        update(&schema(), TENANT, &upd("contacts", vec![("active", Value::Boolean(true))])),
        r#"UPDATE "contacts" SET "active" = $2::"bool" WHERE "tenant_id" = $1"#,
        &[T, Bound::Bool(true)],
    );
}

/// Every (value kind, column kind) pair through `update … SET`: either bound with the column's
/// cast, or refused with the column's SQL type named.
#[test]
fn update_value_kind_compatibility_matrix() {
    let columns = [
        ("active", "bool"),
        ("age", "int4"),
        ("score", "float8"),
        ("name", "text"),
        ("props", "jsonb"),
        ("id", "uuid"),
        ("created_at", "timestamptz"),
    ];
    //                              bool   int    float  text   json   uuid   timestamp
    let matrix: [(Value, [bool; 7]); 8] = [
        (Value::Null, [true, true, true, true, true, true, true]),
        (Value::Boolean(true), [true, false, false, false, false, false, false]),
        (Value::Integer(5), [false, true, true, false, false, false, false]),
        (Value::Float(5.5), [false, false, true, false, false, false, false]),
        (text("v"), [false, false, false, true, true, true, true]),
        (Value::Json(s("{}")), [false, false, false, false, true, false, false]),
        (Value::Uuid(s("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f")), [false, false, false, true, false, true, false]),
        (Value::Timestamp(s("2024-01-01T00:00:00Z")), [false, false, false, true, false, false, true]),
    ];
    for (value, row) in matrix {
        for (&(c, ty), ok) in columns.iter().zip(row) {
            let r = update(&schema(), TENANT, &upd("contacts", vec![(c, value.clone())]));
            if ok {
                golden(
                    r,
                    &format!(r#"UPDATE "contacts" SET "{c}" = $2::"{ty}" WHERE "tenant_id" = $1"#),
                    &[T, Bound::of(&value)],
                );
            } else {
                assert_eq!(refused(r), format!("invalid(value kind does not fit a {ty} column)"), "{value:?} into {c}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// delete

#[test]
fn delete_with_filters() {
    let mut q = del("contacts");
    q.filters = vec![
        filter(col("age"), Comparison::Lt, Value::Integer(18)),
        filter(col("email"), Comparison::IsNull, Value::Null),
        filter(path("props", &["kind"]), Comparison::Eq, text("lead")),
    ];
    let st = golden(
        delete(&schema(), TENANT, &q),
        r#"DELETE FROM "contacts" WHERE "tenant_id" = $1 AND "age" < $2::"int4" AND "email" IS NULL AND ("props" ->> 'kind') = $3::text"#,
        &[T, Bound::Int(18), t("lead")],
    );
    assert!(st.returns.is_empty());
}

#[test]
fn delete_returning() {
    let mut q = del("contacts");
    q.filters = vec![eq("id", text("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f"))];
    q.returning = strings(&["id", "props", "created_at"]);
    let st = golden(
        delete(&schema(), TENANT, &q),
        &format!(r#"DELETE FROM "contacts" WHERE "tenant_id" = $1 AND "id" = $2::"uuid" RETURNING "id"::text, "props"::text, {TS_OUT}"#),
        &[T, t("6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f")],
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("props", Kind::Json), ("created_at", Kind::Timestamp)]));
}

#[test]
fn delete_without_filters_is_built_and_still_scoped_to_the_tenant() {
    // Not refused: it deletes every row of the tenant (and only the tenant's).
    golden(delete(&schema(), TENANT, &del("contacts")), r#"DELETE FROM "contacts" WHERE "tenant_id" = $1"#, &[T]);
}

// ---------------------------------------------------------------------------------------------
// lock / try-lock

#[test]
fn lock_statements_hash_tenant_and_key_as_binds() {
    assert_eq!(LOCK_SQL, "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 0))");
    assert_eq!(TRY_LOCK_SQL, "SELECT pg_try_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 0))");
    // The same lock space: only the function differs.
    assert_eq!(
        LOCK_SQL.strip_prefix("SELECT pg_advisory_xact_lock"),
        TRY_LOCK_SQL.strip_prefix("SELECT pg_try_advisory_xact_lock")
    );
}

// ---------------------------------------------------------------------------------------------
// Batches: every value an element of one text array (`$2[k]`, numbered across the batch's
// statements), earlier cells read from the results so far (`$3`), the tenant still `$1`.

fn earlier(statement: u32, row: u32, column: &str) -> Value {
    Value::Earlier(Earlier { statement, row, column: s(column) })
}

fn filled(document: &str, fill: Vec<(&[&str], Value)>) -> Value {
    let fill = fill
        .into_iter()
        .map(|(p, e)| match e {
            Value::Earlier(e) => (strings(p), e),
            _ => unreachable!("fill with earlier()"),
        })
        .collect();
    Value::JsonFilled(JsonFilled { document: s(document), fill })
}

/// A statement built for a batch: only the tenant is a real bind; everything else went to the
/// batch's array.
#[track_caller]
fn batched(r: Check<Statement>) -> Statement {
    let st = r.unwrap_or_else(|e| panic!("refused: {}", describe(&e)));
    assert_eq!(st.args.len(), 1, "only the tenant is bound: {}", st.sql);
    assert_eq!(st.bound.first(), Some(&T));
    assert_eq!(st.sql.matches("\"tenant_id\" = $1").count() + st.sql.matches("VALUES ($1, ").count(), 1, "{}", st.sql);
    st
}

#[test]
fn batch_statements_bind_into_one_array_numbered_across_statements() {
    let schema = schema();
    let mut b = BatchValues::default();

    // 0: an insert returning its id.
    let mut q = ins("contacts", &["name", "age", "props"], vec![vec![text("Ada"), Value::Integer(36), Value::Null]]);
    q.returning = strings(&["id", "name"]);
    let st = batched(insert_in(&schema, TENANT, &q, Some(&mut b)));
    assert_eq!(
        st.sql,
        r#"INSERT INTO "contacts" ("tenant_id", "name", "age", "props") VALUES ($1, $2[1]::"text", $2[2]::"int4", $2[3]::"jsonb") RETURNING "id"::text AS "c0", "name"::text AS "c1""#
    );
    assert_eq!(st.returns, kinds(&[("id", Kind::Uuid), ("name", Kind::Text)]));
    assert_eq!(
        batch_sql(&st),
        r#"WITH q AS (INSERT INTO "contacts" ("tenant_id", "name", "age", "props") VALUES ($1, $2[1]::"text", $2[2]::"int4", $2[3]::"jsonb") RETURNING "id"::text AS "c0", "name"::text AS "c1") SELECT jsonb_build_object('n', count(*), 'rows', COALESCE(jsonb_agg(jsonb_build_array(q."c0", q."c1")), '[]'::jsonb)) FROM q"#
    );
    b.returns.push(st.returns);

    // 1: a select using the id, as a value and in a JSON path filter; its own values go on.
    let mut q = sel("contacts", &["name", "props", "score"]);
    q.filters = vec![
        eq("id", earlier(0, 0, "id")),
        filter(path("props", &["parent"]), Comparison::Eq, earlier(0, 0, "id")),
        eq("score", Value::Float(0.1)),
        filter(path("props", &["n"]), Comparison::Ge, Value::Integer(2)),
    ];
    let st = batched(select_in(&schema, TENANT, &q, CAP, Some(&mut b)));
    assert_eq!(
        st.sql,
        concat!(
            r#"SELECT "name"::text AS "c0", "props"::text AS "c1", "score"::float8 AS "c2" FROM "contacts" WHERE "tenant_id" = $1"#,
            r#" AND "id" = (($3 -> 0 -> 'rows' -> 0 -> 0) #>> '{}')::"uuid""#,
            r#" AND ("props" ->> 'parent') = (($3 -> 0 -> 'rows' -> 0 -> 0) #>> '{}')"#,
            r#" AND "score" = $2[4]::"float8""#,
            r#" AND ("props" ->> 'n') >= $2[5]::text LIMIT 101"#,
        )
    );
    assert_eq!(
        batch_sql(&st),
        format!(
            r#"WITH q AS ({}) SELECT jsonb_build_object('n', count(*), 'rows', COALESCE(jsonb_agg(jsonb_build_array(q."c0", q."c1", q."c2")), '[]'::jsonb)) FROM q"#,
            st.sql
        )
    );
    b.returns.push(st.returns);

    // 2: an insert whose name is statement 1's first name and whose props are a document
    // completed with statement 0's id, at a nested key.
    let q = ins(
        "contacts",
        &["name", "props"],
        vec![vec![
            earlier(1, 0, "name"),
            // `jsonb_set` adds the last key of a path; the objects above it are in the document.
            filled(r#"{"kind": "child", "parent": {}}"#, vec![(&["parent", "id"], earlier(0, 0, "id")), (&["age"], earlier(1, 2, "score"))]),
        ]],
    );
    let st = batched(insert_in(&schema, TENANT, &q, Some(&mut b)));
    assert_eq!(
        st.sql,
        concat!(
            r#"INSERT INTO "contacts" ("tenant_id", "name", "props") VALUES ($1, (($3 -> 1 -> 'rows' -> 0 -> 0) #>> '{}')::"text", "#,
            r#"(jsonb_set(jsonb_set($2[6]::jsonb, '{parent,id}', COALESCE(($3 -> 0 -> 'rows' -> 0 -> 0), 'null'::jsonb), true), "#,
            r#"'{age}', COALESCE(($3 -> 1 -> 'rows' -> 2 -> 2), 'null'::jsonb), true))::"jsonb")"#,
        )
    );
    // Without `returning`, the batch still counts the rows.
    assert_eq!(
        batch_sql(&st),
        format!(r#"WITH q AS ({} RETURNING 1) SELECT jsonb_build_object('n', count(*), 'rows', '[]'::jsonb) FROM q"#, st.sql)
    );
    assert!(st.returns.is_empty());
    b.returns.push(st.returns);

    // 3: an update setting a null and an earlier cell, by an earlier id.
    let mut q = upd("contacts", vec![("email", Value::Null), ("name", earlier(0, 0, "name"))]);
    q.filters = vec![eq("id", earlier(0, 0, "id"))];
    q.returning = strings(&["id"]);
    let st = batched(update_in(&schema, TENANT, &q, Some(&mut b)));
    assert_eq!(
        st.sql,
        concat!(
            r#"UPDATE "contacts" SET "email" = $2[7]::"citext", "name" = (($3 -> 0 -> 'rows' -> 0 -> 1) #>> '{}')::"text""#,
            r#" WHERE "tenant_id" = $1 AND "id" = (($3 -> 0 -> 'rows' -> 0 -> 0) #>> '{}')::"uuid" RETURNING "id"::text AS "c0""#,
        )
    );
    b.returns.push(st.returns);

    // 4, 5: the locks take the next elements, on the single calls' hash.
    let (sql, returns) = batch_lock_sql("idem:k", false, &mut b);
    assert_eq!(
        sql,
        "SELECT jsonb_build_object('n', 1, 'rows', jsonb_build_array(jsonb_build_array(l))) \
         FROM pg_try_advisory_xact_lock(hashtextextended($1::text || ':' || $2[8]::text, 0)) AS l"
    );
    assert_eq!(returns, kinds(&[("locked", Kind::Bool)]));
    b.returns.push(returns);
    let (sql, returns) = batch_lock_sql("k'); --", true, &mut b);
    assert_eq!(
        sql,
        "SELECT jsonb_build_object('n', 0, 'rows', '[]'::jsonb) \
         FROM pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2[9]::text, 0))"
    );
    assert!(returns.is_empty());
    assert!(LOCK_SQL.ends_with("hashtextextended($1::text || ':' || $2::text, 0))"));

    // 6: a delete, its value after the locks' keys.
    let mut q = del("contacts");
    q.filters = vec![eq("active", Value::Boolean(false)), eq("created_at", Value::Timestamp(s("2026-01-01T00:00:00Z")))];
    let st = batched(delete_in(&schema, TENANT, &q, Some(&mut b)));
    assert_eq!(
        st.sql,
        r#"DELETE FROM "contacts" WHERE "tenant_id" = $1 AND "active" = $2[10]::"bool" AND "created_at" = $2[11]::"timestamptz""#
    );

    // Every value, as text, in the order of its element; strings with quotes stay values.
    let expected: Vec<Option<String>> = vec![
        Some(s("Ada")),
        Some(s("36")),
        None,
        Some(s("0.1")),
        Some(s("2")),
        Some(s(r#"{"kind": "child", "parent": {}}"#)),
        None,
        Some(s("idem:k")),
        Some(s("k'); --")),
        Some(s("false")),
        Some(s("2026-01-01T00:00:00Z")),
    ];
    assert_eq!(b.params, expected);
}

#[test]
fn batch_floats_travel_as_text_postgres_reads_back_exactly() {
    let mut b = BatchValues::default();
    let values = [0.1, -2.5e-300, 1e21, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    let rows = values.iter().map(|f| vec![Value::Float(*f)]).collect();
    batched(insert_in(&schema(), TENANT, &ins("contacts", &["score"], rows), Some(&mut b)));
    let texts: Vec<&str> = b.params.iter().map(|p| p.as_deref().unwrap()).collect();
    assert_eq!(texts, ["0.1", "-2.5e-300", "1e21", "NaN", "Infinity", "-Infinity"]);
}

#[test]
fn earlier_and_json_filled_are_refused_outside_a_batch() {
    let schema = schema();
    let only = "invalid(earlier and json-filled values are only for batch statements)";
    let doc = || filled("{}", vec![]);
    assert_eq!(refused(insert(&schema, TENANT, &ins("contacts", &["name"], vec![vec![earlier(0, 0, "id")]]))), only);
    assert_eq!(refused(insert(&schema, TENANT, &ins("contacts", &["props"], vec![vec![doc()]]))), only);
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![eq("id", earlier(0, 0, "id"))];
    assert_eq!(refused(select(&schema, TENANT, &q, CAP)), only);
    q.filters = vec![filter(path("props", &["a"]), Comparison::Eq, earlier(0, 0, "id"))];
    assert_eq!(refused(select(&schema, TENANT, &q, CAP)), only);
    assert_eq!(refused(update(&schema, TENANT, &upd("contacts", vec![("props", doc())]))), only);
    let mut q = del("contacts");
    q.filters = vec![eq("name", earlier(0, 0, "name"))];
    assert_eq!(refused(delete(&schema, TENANT, &q)), only);
}

/// A batch whose statement 0 returned `id` (uuid), `name` (text) and `age` (int).
fn after_one() -> BatchValues {
    BatchValues { params: vec![Some(s("x"))], returns: vec![kinds(&[("id", Kind::Uuid), ("name", Kind::Text), ("age", Kind::Int)])] }
}

#[track_caller]
fn refused_in_batch(columns: &[&str], row: Vec<Value>) -> String {
    // A refused statement may have appended values: the host throws the whole batch away.
    let mut b = after_one();
    refused(insert_in(&schema(), TENANT, &ins("contacts", columns, vec![row]), Some(&mut b)))
}

#[test]
fn batch_refuses_references_forward_to_itself_or_to_columns_not_returned() {
    assert_eq!(refused_in_batch(&["name"], vec![earlier(1, 0, "id")]), "invalid(earlier statement 1 is not before this one)");
    assert_eq!(refused_in_batch(&["name"], vec![earlier(7, 0, "id")]), "invalid(earlier statement 7 is not before this one)");
    assert_eq!(refused_in_batch(&["name"], vec![earlier(0, 0, "email")]), "invalid(earlier statement 0 returns no column email)");
    // Names are matched exactly, as returned.
    assert_eq!(refused_in_batch(&["name"], vec![earlier(0, 0, "ID")]), "invalid(earlier statement 0 returns no column ID)");
    // The same checks inside a document.
    assert_eq!(
        refused_in_batch(&["props"], vec![filled("{}", vec![(&["a"], earlier(1, 0, "id"))])]),
        "invalid(earlier statement 1 is not before this one)"
    );
    assert_eq!(
        refused_in_batch(&["props"], vec![filled("{}", vec![(&["a"], earlier(0, 0, "nope"))])]),
        "invalid(earlier statement 0 returns no column nope)"
    );
    // A statement cannot use its own results: with nothing before it, even 0 is forward.
    let mut b = BatchValues::default();
    let q = ins("contacts", &["name"], vec![vec![earlier(0, 0, "id")]]);
    assert_eq!(refused(insert_in(&schema(), TENANT, &q, Some(&mut b))), "invalid(earlier statement 0 is not before this one)");
}

#[test]
fn batch_refuses_an_earlier_cell_of_a_kind_that_does_not_fit_the_column() {
    for (column, cell, ty) in [
        ("age", "name", "int4"),
        ("age", "id", "int4"),
        ("active", "age", "bool"),
        ("props", "age", "jsonb"),
        ("created_at", "id", "timestamptz"),
    ] {
        assert_eq!(refused_in_batch(&[column], vec![earlier(0, 0, cell)]), format!("invalid(earlier {cell} does not fit a {ty} column)"));
    }
    // What does fit: an int into a float, a uuid into text, text into a uuid (cast by PostgreSQL).
    for (column, cell) in [("score", "age"), ("name", "id"), ("id", "name"), ("props", "name")] {
        let mut b = after_one();
        let r = insert_in(&schema(), TENANT, &ins("contacts", &[column], vec![vec![earlier(0, 0, cell)]]), Some(&mut b));
        assert!(r.is_ok(), "{column} from {cell}: {}", r.err().map(|e| describe(&e)).unwrap_or_default());
    }
    // An unknown column is refused as in any statement, before its value is looked at.
    assert_eq!(refused_in_batch(&["nope"], vec![earlier(0, 0, "id")]), "unknown-column(contacts.nope)");
    assert_eq!(refused_in_batch(&["tenant_id"], vec![earlier(0, 0, "id")]), "tenant-column-reserved");
}

#[test]
fn batch_refuses_bad_json_filled_documents_and_keys() {
    let id = || earlier(0, 0, "id");
    for (column, value, why) in [
        ("name", filled("{}", vec![]), "json-filled does not fit a text column"),
        ("props", filled("[1]", vec![]), "json-filled document must be a JSON object"),
        ("props", filled("\"text\"", vec![]), "json-filled document must be a JSON object"),
        ("props", filled("{", vec![]), "json-filled document must be a JSON object"),
        ("props", filled("", vec![]), "json-filled document must be a JSON object"),
        ("props", filled("{}", vec![(&[], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
        ("props", filled("{}", vec![(&["a'b"], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
        ("props", filled("{}", vec![(&["a,b"], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
        ("props", filled("{}", vec![(&["}"], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
        ("props", filled("{}", vec![(&[""], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
        ("props", filled("{}", vec![(&["a"; 9], id())]), "JSON path keys are 1-64 characters of [A-Za-z0-9_-]"),
    ] {
        assert_eq!(refused_in_batch(&[column], vec![value]), format!("invalid({why})"), "{column}");
    }
    let long = "k".repeat(65);
    assert_eq!(
        refused_in_batch(&["props"], vec![filled("{}", vec![(&[long.as_str()], id())])]),
        "invalid(JSON path keys are 1-64 characters of [A-Za-z0-9_-])"
    );
    // A document compares with nothing in a JSON path filter.
    let mut b = after_one();
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path("props", &["a"]), Comparison::Eq, filled("{}", vec![]))];
    assert_eq!(refused(select_in(&schema(), TENANT, &q, CAP, Some(&mut b))), "invalid(a JSON path compares with text, not a document)");
}

// ---------------------------------------------------------------------------------------------
// Quoting and plugin strings

#[test]
fn identifiers_and_type_names_have_their_quotes_doubled() {
    let mut q = sel("we\"ird", &["odd\"col"]);
    q.filters = vec![eq("odd\"col", text("v"))];
    q.order_by = vec![Order { target: col("odd\"col"), descending: false }];
    golden(
        select(&schema(), TENANT, &q, 10),
        r#"SELECT "odd""col"::text FROM "we""ird" WHERE "tenant_id" = $1 AND "odd""col" = $2::"my""type" ORDER BY "odd""col" ASC LIMIT 11"#,
        &[T, t("v")],
    );

    let mut q = ins("we\"ird", &["odd\"col"], vec![vec![text("v")]]);
    q.on_conflict =
        Some(OnConflict { target: strings(&["odd\"col"]), action: ConflictAction::DoUpdate(strings(&["odd\"col"])) });
    q.returning = strings(&["odd\"col"]);
    golden(
        insert(&schema(), TENANT, &q),
        r#"INSERT INTO "we""ird" ("tenant_id", "odd""col") VALUES ($1, $2::"my""type") ON CONFLICT ("tenant_id", "odd""col") DO UPDATE SET "odd""col" = EXCLUDED."odd""col" RETURNING "odd""col"::text"#,
        &[T, t("v")],
    );

    let mut q = upd("we\"ird", vec![("odd\"col", text("v"))]);
    q.returning = strings(&["odd\"col"]);
    golden(
        update(&schema(), TENANT, &q),
        r#"UPDATE "we""ird" SET "odd""col" = $2::"my""type" WHERE "tenant_id" = $1 RETURNING "odd""col"::text"#,
        &[T, t("v")],
    );

    golden(delete(&schema(), TENANT, &del("we\"ird")), r#"DELETE FROM "we""ird" WHERE "tenant_id" = $1"#, &[T]);
}

#[track_caller]
fn assert_not_spliced(st: &Statement) {
    for evil in [EVIL, EVIL2, "DROP", "O'Brien", "*/"] {
        assert!(!st.sql.contains(evil), "{evil:?} spliced into {}", st.sql);
    }
}

#[test]
fn plugin_strings_with_quotes_and_sql_only_ever_travel_as_binds() {
    let schema = schema();

    let mut q = sel("contacts", &["id"]);
    q.filters = vec![
        eq("name", text(EVIL)),
        filter(path("props", &["k"]), Comparison::Eq, text(EVIL2)),
        eq("props", Value::Json(s(EVIL))),
        eq("id", Value::Uuid(s(EVIL2))),
        eq("created_at", Value::Timestamp(s(EVIL))),
    ];
    let st = golden(
        select(&schema, TENANT, &q, CAP),
        r#"SELECT "id"::text FROM "contacts" WHERE "tenant_id" = $1 AND "name" = $2::"text" AND ("props" ->> 'k') = $3::text AND "props" = $4::"jsonb" AND "id" = $5::"uuid" AND "created_at" = $6::"timestamptz" LIMIT 101"#,
        &[T, t(EVIL), t(EVIL2), t(EVIL), t(EVIL2), t(EVIL)],
    );
    assert_not_spliced(&st);

    let mut q = ins("contacts", &["name", "email"], vec![vec![text(EVIL), text(EVIL2)]]);
    q.on_conflict = Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoUpdate(strings(&["name"])) });
    let st = golden(
        insert(&schema, TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "name", "email") VALUES ($1, $2::"text", $3::"citext") ON CONFLICT ("tenant_id", "email") DO UPDATE SET "name" = EXCLUDED."name""#,
        &[T, t(EVIL), t(EVIL2)],
    );
    assert_not_spliced(&st);

    let mut q = upd("contacts", vec![("name", text(EVIL2))]);
    q.filters = vec![eq("email", text(EVIL)), filter(path("props", &["a", "b"]), Comparison::Lt, text(EVIL2))];
    let st = golden(
        update(&schema, TENANT, &q),
        r#"UPDATE "contacts" SET "name" = $2::"text" WHERE "tenant_id" = $1 AND "email" = $3::"citext" AND ("props" -> 'a' ->> 'b') < $4::text"#,
        &[T, t(EVIL2), t(EVIL), t(EVIL2)],
    );
    assert_not_spliced(&st);

    let mut q = del("contacts");
    q.filters = vec![eq("name", text(EVIL)), filter(path("props", &["x"]), Comparison::Ne, text(EVIL2))];
    let st = golden(
        delete(&schema, TENANT, &q),
        r#"DELETE FROM "contacts" WHERE "tenant_id" = $1 AND "name" = $2::"text" AND ("props" ->> 'x') <> $3::text"#,
        &[T, t(EVIL), t(EVIL2)],
    );
    assert_not_spliced(&st);
}

#[test]
fn plugin_names_that_try_to_inject_are_refused_not_quoted() {
    let schema = schema();
    let table = r#"contacts" WHERE 1=1; --"#;
    assert_eq!(refused(select(&schema, TENANT, &sel(table, &["id"]), CAP)), format!("unknown-table({table})"));
    let column = r#"id", "tenant_id"#;
    assert_eq!(
        refused(select(&schema, TENANT, &sel("contacts", &[column]), CAP)),
        format!("unknown-column(contacts.{column})")
    );
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path("props", &["a' OR '1'='1"]), Comparison::Eq, text("v"))];
    assert_eq!(refused(select(&schema, TENANT, &q, CAP)), "invalid(JSON path keys are 1-64 characters of [A-Za-z0-9_-])");
}

#[test]
fn the_tenant_column_in_another_spelling_is_just_unknown() {
    // Names are matched exactly (and quoted), so no spelling reaches the real tenant_id.
    for name in ["Tenant_Id", "TENANT_ID", "tenant_id ", " tenant_id", "\"tenant_id\"", "tenant_id\0"] {
        assert_eq!(
            refused(select(&schema(), TENANT, &sel("contacts", &[name]), CAP)),
            format!("unknown-column(contacts.{name})")
        );
        assert_eq!(
            refused(update(&schema(), TENANT, &upd("contacts", vec![(name, Value::Uuid(s(&Uuid::nil().to_string())))]))),
            format!("unknown-column(contacts.{name})")
        );
    }
}

#[test]
fn different_tenants_differ_only_in_the_first_bind() {
    let other = Uuid::from_u128(0xffff_0000_ffff_0000_ffff_0000_ffff_0000);
    let mut q = upd("contacts", vec![("name", text("Ann"))]);
    q.filters = vec![eq("age", Value::Integer(3))];
    let a = update(&schema(), TENANT, &q).ok().unwrap();
    let b = update(&schema(), other, &q).ok().unwrap();
    assert_eq!(a.sql, b.sql);
    assert_eq!(binds(&a)[0], Bound::Uuid(TENANT));
    assert_eq!(binds(&b)[0], Bound::Uuid(other));
    assert_eq!(binds(&a)[1..], binds(&b)[1..]);
    assert!(!a.sql.contains(&TENANT.to_string()));
}

// ---------------------------------------------------------------------------------------------
// Refusals: unknown table

#[test]
fn refuses_unknown_table() {
    let schema = schema();
    let want = "unknown-table(nope)";
    assert_eq!(refused(select(&schema, TENANT, &sel("nope", &["id"]), CAP)), want);
    assert_eq!(refused(insert(&schema, TENANT, &ins("nope", &["id"], vec![vec![Value::Null]]))), want);
    assert_eq!(refused(update(&schema, TENANT, &upd("nope", vec![("id", Value::Null)]))), want);
    assert_eq!(refused(delete(&schema, TENANT, &del("nope"))), want);
    // Table names are matched exactly.
    assert_eq!(refused(delete(&schema, TENANT, &del("Contacts"))), "unknown-table(Contacts)");
    assert_eq!(refused(delete(&schema, TENANT, &del("public.contacts"))), "unknown-table(public.contacts)");
}

// ---------------------------------------------------------------------------------------------
// Refusals: unknown column and tenant_id, in every place a column can be named

/// Every place a plugin can name a column, each built with `name` there and valid elsewhere.
fn queries_naming(name: &str) -> Vec<(&'static str, Check<Statement>)> {
    let schema = schema();
    let n = name;
    let mut out = Vec::new();

    out.push(("select column", select(&schema, TENANT, &sel("contacts", &["id", n]), CAP)));
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![eq("age", Value::Integer(1)), eq(n, text("v"))];
    out.push(("select filter", select(&schema, TENANT, &q, CAP)));
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(col(n), Comparison::IsNull, Value::Null)];
    out.push(("select is-null filter", select(&schema, TENANT, &q, CAP)));
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path(n, &["k"]), Comparison::Eq, text("v"))];
    out.push(("select json path filter", select(&schema, TENANT, &q, CAP)));
    let mut q = sel("contacts", &["id"]);
    q.order_by = vec![Order { target: col(n), descending: false }];
    out.push(("select order", select(&schema, TENANT, &q, CAP)));
    let mut q = sel("contacts", &["id"]);
    q.order_by = vec![Order { target: path(n, &["k"]), descending: true }];
    out.push(("select json path order", select(&schema, TENANT, &q, CAP)));

    out.push(("insert column", insert(&schema, TENANT, &ins("contacts", &["name", n], vec![vec![text("a"), text("b")]]))));
    let mut q = ins("contacts", &["name"], vec![vec![text("a")]]);
    q.on_conflict = Some(OnConflict { target: strings(&[n]), action: ConflictAction::DoNothing });
    out.push(("insert on-conflict target", insert(&schema, TENANT, &q)));
    let mut q = ins("contacts", &["name"], vec![vec![text("a")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["name"]), action: ConflictAction::DoUpdate(strings(&["name", n])) });
    out.push(("insert do-update set", insert(&schema, TENANT, &q)));
    let mut q = ins("contacts", &["name"], vec![vec![text("a")]]);
    q.returning = strings(&["id", n]);
    out.push(("insert returning", insert(&schema, TENANT, &q)));

    out.push(("update set", update(&schema, TENANT, &upd("contacts", vec![("name", text("a")), (n, text("b"))]))));
    let mut q = upd("contacts", vec![("name", text("a"))]);
    q.filters = vec![eq(n, text("v"))];
    out.push(("update filter", update(&schema, TENANT, &q)));
    let mut q = upd("contacts", vec![("name", text("a"))]);
    q.returning = strings(&[n]);
    out.push(("update returning", update(&schema, TENANT, &q)));

    let mut q = del("contacts");
    q.filters = vec![filter(col(n), Comparison::IsNotNull, Value::Null)];
    out.push(("delete filter", delete(&schema, TENANT, &q)));
    let mut q = del("contacts");
    q.filters = vec![filter(path(n, &["k"]), Comparison::IsNull, Value::Null)];
    out.push(("delete json path filter", delete(&schema, TENANT, &q)));
    let mut q = del("contacts");
    q.returning = strings(&[n]);
    out.push(("delete returning", delete(&schema, TENANT, &q)));
    out
}

#[test]
fn refuses_unknown_column_everywhere() {
    let cases = queries_naming("nope");
    assert_eq!(cases.len(), 16);
    for (place, r) in cases {
        assert_eq!(refused(r), "unknown-column(contacts.nope)", "{place}");
    }
}

#[test]
fn refuses_tenant_column_everywhere() {
    let cases = queries_naming("tenant_id");
    assert_eq!(cases.len(), 16);
    for (place, r) in cases {
        assert_eq!(refused(r), "tenant-column-reserved", "{place}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals: database-assigned columns (a global key is no existence oracle)

const THEIRS: &str = "6f1c7a52-0d4e-4b8a-9e3f-2a1b0c9d8e7f";
const WANT_ASSIGNED: &str = "invalid(column id is assigned by the database)";

/// Values a plugin might give the key: another org's id, a fresh one, text, null. The answer
/// must not depend on which (the builder refuses before it looks at a value).
fn key_values() -> Vec<Value> {
    vec![Value::Uuid(s(THEIRS)), Value::Uuid(Uuid::new_v4().to_string()), text(THEIRS), Value::Null, Value::Integer(1)]
}

#[test]
fn refuses_insert_naming_a_database_assigned_column() {
    let schema = schema_with_global_id();
    for v in key_values() {
        let q = ins("contacts", &["id", "name"], vec![vec![v.clone(), text("Ann")]]);
        assert_eq!(refused(insert(&schema, TENANT, &q)), WANT_ASSIGNED, "{v:?}");
        // Wherever it stands, with any number of rows, with a conflict clause or RETURNING.
        let mut q = ins("contacts", &["name", "id"], vec![vec![text("Ann"), v.clone()], vec![text("Bob"), v.clone()]]);
        q.on_conflict = Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoNothing });
        q.returning = strings(&["id"]);
        assert_eq!(refused(insert(&schema, TENANT, &q)), WANT_ASSIGNED, "{v:?}");
    }
    // Before the row shapes are looked at: a short row does not change the answer.
    let q = ins("contacts", &["id", "name"], vec![vec![Value::Uuid(s(THEIRS))]]);
    assert_eq!(refused(insert(&schema, TENANT, &q)), WANT_ASSIGNED);
}

#[test]
fn refuses_upsert_updating_a_database_assigned_column() {
    let schema = schema_with_global_id();
    let mut q = ins("contacts", &["email", "name"], vec![vec![text("a@example.com"), text("Ann")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoUpdate(strings(&["name", "id"])) });
    assert_eq!(refused(insert(&schema, TENANT, &q)), WANT_ASSIGNED);
    q.on_conflict = Some(OnConflict { target: strings(&["email"]), action: ConflictAction::DoUpdate(strings(&["id"])) });
    assert_eq!(refused(insert(&schema, TENANT, &q)), WANT_ASSIGNED);
}

#[test]
fn refuses_update_setting_a_database_assigned_column() {
    let schema = schema_with_global_id();
    for v in key_values() {
        let mut q = upd("contacts", vec![("name", text("Ann")), ("id", v.clone())]);
        q.filters = vec![eq("id", Value::Uuid(s(THEIRS)))];
        assert_eq!(refused(update(&schema, TENANT, &q)), WANT_ASSIGNED, "{v:?}");
        assert_eq!(refused(update(&schema, TENANT, &upd("contacts", vec![("id", v.clone())]))), WANT_ASSIGNED, "{v:?}");
    }
}

/// Reading, filtering, ordering, returning and naming it as a conflict target build exactly
/// the SQL they build on a column plugins may write.
#[test]
fn a_database_assigned_column_can_still_be_read_filtered_and_returned() {
    let schema = schema_with_global_id();
    let mut q = sel("contacts", &["id", "name"]);
    q.filters = vec![eq("id", Value::Uuid(s(THEIRS)))];
    q.order_by = vec![Order { target: col("id"), descending: false }];
    golden(
        select(&schema, TENANT, &q, CAP),
        r#"SELECT "id"::text, "name"::text FROM "contacts" WHERE "tenant_id" = $1 AND "id" = $2::"uuid" ORDER BY "id" ASC LIMIT 101"#,
        &[T, t(THEIRS)],
    );

    let mut q = ins("contacts", &["name"], vec![vec![text("Ann")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["id"]), action: ConflictAction::DoUpdate(strings(&["name"])) });
    q.returning = strings(&["id"]);
    golden(
        insert(&schema, TENANT, &q),
        r#"INSERT INTO "contacts" ("tenant_id", "name") VALUES ($1, $2::"text") ON CONFLICT ("tenant_id", "id") DO UPDATE SET "name" = EXCLUDED."name" RETURNING "id"::text"#,
        &[T, t("Ann")],
    );

    let mut q = upd("contacts", vec![("name", text("Ann"))]);
    q.filters = vec![eq("id", Value::Uuid(s(THEIRS)))];
    q.returning = strings(&["id"]);
    golden(
        update(&schema, TENANT, &q),
        r#"UPDATE "contacts" SET "name" = $2::"text" WHERE "tenant_id" = $1 AND "id" = $3::"uuid" RETURNING "id"::text"#,
        &[T, t("Ann"), t(THEIRS)],
    );

    let mut q = del("contacts");
    q.filters = vec![eq("id", Value::Uuid(s(THEIRS)))];
    q.returning = strings(&["id"]);
    golden(
        delete(&schema, TENANT, &q),
        r#"DELETE FROM "contacts" WHERE "tenant_id" = $1 AND "id" = $2::"uuid" RETURNING "id"::text"#,
        &[T, t(THEIRS)],
    );
}

/// Unknown and reserved names keep their own answers on a table with a global key.
#[test]
fn the_database_assigned_refusal_comes_after_unknown_and_reserved_names() {
    let schema = schema_with_global_id();
    let q = ins("contacts", &["nope", "id"], vec![vec![text("a"), Value::Null]]);
    assert_eq!(refused(insert(&schema, TENANT, &q)), "unknown-column(contacts.nope)");
    let q = ins("contacts", &["tenant_id", "id"], vec![vec![text("a"), Value::Null]]);
    assert_eq!(refused(insert(&schema, TENANT, &q)), "tenant-column-reserved");
    assert_eq!(refused(insert(&schema, TENANT, &ins("nope", &["id"], vec![vec![Value::Null]]))), "unknown-table(nope)");
}

// ---------------------------------------------------------------------------------------------
// Refusals: malformed queries (each `DbError::Invalid` the builder can produce)

#[test]
fn refuses_select_without_columns() {
    assert_eq!(
        refused(select(&schema(), TENANT, &sel("contacts", &[]), CAP)),
        "invalid(select needs at least one column)"
    );
    // Checked before the table is looked up.
    assert_eq!(refused(select(&schema(), TENANT, &sel("nope", &[]), CAP)), "invalid(select needs at least one column)");
}

#[test]
fn refuses_insert_without_columns() {
    assert_eq!(
        refused(insert(&schema(), TENANT, &ins("contacts", &[], vec![vec![]]))),
        "invalid(insert needs columns and at least one row)"
    );
}

#[test]
fn refuses_insert_without_rows() {
    assert_eq!(
        refused(insert(&schema(), TENANT, &ins("contacts", &["name"], vec![]))),
        "invalid(insert needs columns and at least one row)"
    );
}

#[test]
fn refuses_insert_row_of_the_wrong_length() {
    let short = ins("contacts", &["name", "age"], vec![vec![text("a")]]);
    assert_eq!(refused(insert(&schema(), TENANT, &short)), "invalid(row has 1 values for 2 columns)");
    let long = ins("contacts", &["name", "age"], vec![vec![text("a"), Value::Integer(1), Value::Null]]);
    assert_eq!(refused(insert(&schema(), TENANT, &long)), "invalid(row has 3 values for 2 columns)");
    let second = ins("contacts", &["name", "age"], vec![vec![text("a"), Value::Integer(1)], vec![]]);
    assert_eq!(refused(insert(&schema(), TENANT, &second)), "invalid(row has 0 values for 2 columns)");
}

#[test]
fn refuses_on_conflict_without_target() {
    let mut q = ins("contacts", &["name"], vec![vec![text("a")]]);
    q.on_conflict = Some(OnConflict { target: Vec::new(), action: ConflictAction::DoNothing });
    assert_eq!(refused(insert(&schema(), TENANT, &q)), "invalid(on-conflict needs a target)");
}

#[test]
fn refuses_do_update_without_columns() {
    let mut q = ins("contacts", &["name"], vec![vec![text("a")]]);
    q.on_conflict = Some(OnConflict { target: strings(&["name"]), action: ConflictAction::DoUpdate(Vec::new()) });
    assert_eq!(refused(insert(&schema(), TENANT, &q)), "invalid(do-update needs columns)");
}

#[test]
fn refuses_update_without_assignments() {
    let mut q = upd("contacts", vec![]);
    q.filters = vec![eq("age", Value::Integer(1))];
    assert_eq!(refused(update(&schema(), TENANT, &q)), "invalid(update needs at least one assignment)");
}

#[test]
fn refuses_value_of_the_wrong_kind_in_every_bound_place() {
    let want = "invalid(value kind does not fit a int4 column)";
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![eq("age", text("1"))];
    assert_eq!(refused(select(&schema(), TENANT, &q, CAP)), want);
    let q = ins("contacts", &["name", "age"], vec![vec![text("a"), Value::Integer(1)], vec![text("b"), Value::Float(1.0)]]);
    assert_eq!(refused(insert(&schema(), TENANT, &q)), want);
    assert_eq!(refused(update(&schema(), TENANT, &upd("contacts", vec![("age", Value::Boolean(true))]))), want);
    let mut q = upd("contacts", vec![("name", text("a"))]);
    q.filters = vec![filter(col("age"), Comparison::Gt, Value::Json(s("1")))];
    assert_eq!(refused(update(&schema(), TENANT, &q)), want);
    let mut q = del("contacts");
    q.filters = vec![filter(col("age"), Comparison::Le, Value::Timestamp(s("2024-01-01T00:00:00Z")))];
    assert_eq!(refused(delete(&schema(), TENANT, &q)), want);
    // The message names the column's own SQL type.
    assert_eq!(
        refused(update(&schema(), TENANT, &upd("contacts", vec![("email", Value::Integer(1))]))),
        "invalid(value kind does not fit a citext column)"
    );
}

#[test]
fn refuses_comparison_with_null() {
    let ops = [Comparison::Eq, Comparison::Ne, Comparison::Lt, Comparison::Le, Comparison::Gt, Comparison::Ge];
    let want = "invalid(compare with null using is-null / is-not-null)";
    for op in ops {
        for target in [col("name"), path("props", &["k"])] {
            let mut q = sel("contacts", &["id"]);
            q.filters = vec![filter(target.clone(), op, Value::Null)];
            assert_eq!(refused(select(&schema(), TENANT, &q, CAP)), want, "{op:?} {target:?}");
            let mut q = upd("contacts", vec![("name", text("a"))]);
            q.filters = vec![filter(target.clone(), op, Value::Null)];
            assert_eq!(refused(update(&schema(), TENANT, &q)), want, "{op:?} {target:?}");
            let mut q = del("contacts");
            q.filters = vec![filter(target.clone(), op, Value::Null)];
            assert_eq!(refused(delete(&schema(), TENANT, &q)), want, "{op:?} {target:?}");
        }
    }
}

#[test]
fn refuses_json_path_on_a_column_that_is_not_json() {
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path("name", &["k"]), Comparison::Eq, text("v"))];
    assert_eq!(refused(select(&schema(), TENANT, &q, CAP)), "invalid(name is not a JSON column)");
    let mut q = sel("contacts", &["id"]);
    q.order_by = vec![Order { target: path("age", &["k"]), descending: false }];
    assert_eq!(refused(select(&schema(), TENANT, &q, CAP)), "invalid(age is not a JSON column)");
    let mut q = del("contacts");
    q.filters = vec![filter(path("id", &["k"]), Comparison::IsNull, Value::Null)];
    assert_eq!(refused(delete(&schema(), TENANT, &q)), "invalid(id is not a JSON column)");
}

#[test]
fn refuses_json_path_with_more_than_eight_keys() {
    let mut q = sel("contacts", &["id"]);
    q.filters = vec![filter(path("props", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]), Comparison::Eq, text("v"))];
    assert_eq!(refused(select(&schema(), TENANT, &q, CAP)), "invalid(JSON path keys are 1-64 characters of [A-Za-z0-9_-])");
}

#[test]
fn refuses_json_path_with_a_bad_key() {
    let long = "k".repeat(65);
    let bad = [
        "", &long, "a'b", "'", "a\"b", "a\\b", "a b", "a.b", "a;b", "a)b", "a--'", "é", "a\0", "a\n", "{a}", "a,b", "$1",
    ];
    for key in bad {
        for keys in [vec![key], vec!["ok", key], vec![key, "ok"]] {
            let mut q = sel("contacts", &["id"]);
            q.filters = vec![filter(path("props", &keys), Comparison::Eq, text("v"))];
            assert_eq!(
                refused(select(&schema(), TENANT, &q, CAP)),
                "invalid(JSON path keys are 1-64 characters of [A-Za-z0-9_-])",
                "{keys:?}"
            );
            let mut q = sel("contacts", &["id"]);
            q.order_by = vec![Order { target: path("props", &keys), descending: false }];
            assert_eq!(
                refused(select(&schema(), TENANT, &q, CAP)),
                "invalid(JSON path keys are 1-64 characters of [A-Za-z0-9_-])",
                "order {keys:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema and error mapping

#[test]
fn schema_has_table_matches_exactly() {
    let schema = schema();
    assert!(schema.has_table("contacts"));
    assert!(schema.has_table("we\"ird"));
    assert!(!schema.has_table("Contacts"));
    assert!(!schema.has_table("nope"));
}

#[derive(Debug)]
struct FakeDbError {
    code: Option<&'static str>,
    constraint: Option<&'static str>,
}

impl std::fmt::Display for FakeDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fake database error {:?}", self.code)
    }
}

impl std::error::Error for FakeDbError {}

impl sqlx::error::DatabaseError for FakeDbError {
    fn message(&self) -> &str {
        "a message that may quote tenant data"
    }
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.code.map(std::borrow::Cow::Borrowed)
    }
    fn constraint(&self) -> Option<&str> {
        self.constraint
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

pub(crate) fn db_error(code: Option<&'static str>, constraint: Option<&'static str>) -> sqlx::Error {
    sqlx::Error::Database(Box::new(FakeDbError { code, constraint }))
}

#[test]
fn classify_maps_database_errors_to_plugin_errors() {
    let cases = [
        (Some("23505"), Some("contacts_email_key"), "unique-violation(contacts_email_key)"),
        (Some("23505"), None, "unique-violation()"),
        (Some("23503"), Some("contacts_org_fk"), "constraint-violation(contacts_org_fk)"),
        (Some("23502"), None, "constraint-violation()"),
        (Some("23514"), Some("age_positive"), "constraint-violation(age_positive)"),
        (Some("23P01"), Some("no_overlap"), "constraint-violation(no_overlap)"),
        (Some("42P10"), None, "invalid(on-conflict target matches no unique constraint)"),
        // A value the database refused: the data's fault, named by its condition, never by
        // anything the error carries.
        (Some("22021"), None, "constraint-violation(character_not_in_repertoire)"),
        (Some("22P05"), None, "constraint-violation(untranslatable_character)"),
        (Some("22P02"), None, "constraint-violation(invalid_text_representation)"),
        (Some("22007"), None, "constraint-violation(invalid_datetime_format)"),
        (Some("22003"), Some("ignored"), "constraint-violation(numeric_value_out_of_range)"),
        (Some("2200X"), None, "constraint-violation(data_exception)"),
        (Some("40P01"), None, "unavailable"),
        (Some("40001"), None, "unavailable"),
        (Some("57014"), None, "timeout"),
        (Some("57P01"), None, "unavailable"),
        (Some("08006"), None, "unavailable"),
        (Some("53300"), None, "unavailable"),
        (Some("42703"), None, "invalid(rejected by the database (42703))"),
        (Some("42501"), None, "invalid(rejected by the database (42501))"),
        (None, None, "invalid(rejected by the database ())"),
    ];
    for (code, constraint, want) in cases {
        assert_eq!(describe(&classify(&db_error(code, constraint))), want, "{code:?}");
    }
}

#[test]
fn classify_maps_other_errors_to_unavailable() {
    for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, sqlx::Error::RowNotFound, sqlx::Error::Protocol(s("x"))] {
        assert_eq!(describe(&classify(&e)), "unavailable", "{e:?}");
    }
}
