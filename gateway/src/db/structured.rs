//! Structured queries from plugins (`tenant-db`), turned into SQL.
//!
//! A plugin never writes SQL. It names a table, columns, filters and values; this module checks
//! them against the live schema, quotes every identifier (all of which come from the schema,
//! not from the plugin), binds every value as a parameter, and adds `tenant_id = $1` to every
//! statement and every written row. Grant checks happen in the host before this is called.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, PgExecutor, Row};
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;
use crate::plugin::bindings::tenant_db::{
    ColumnRef, Comparison, ConflictAction, DbError, DeleteQuery, Earlier, Filter, InsertQuery, JsonFilled, Rows,
    SelectQuery, UpdateQuery, Value,
};

pub const TENANT_COLUMN: &str = "tenant_id";

/// How a column's values travel: the SQL type to cast to, and how to decode results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Float,
    Text,
    Json,
    Uuid,
    Timestamp,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub kind: Kind,
    /// The SQL type name used in casts (`int4`, `jsonb`, `timestamptz`, …).
    pub sql_type: String,
    /// Part of a unique, exclusion or foreign-key constraint that does not include
    /// `tenant_id`: the database checks such a value against every tenant's rows, so a plugin
    /// that could choose it would learn whether it exists in another org (a `unique-violation`
    /// naming the primary key, a foreign key that passes). Plugins may read and filter on it,
    /// never write it.
    pub db_assigned: bool,
}

/// Tenant tables (those with a `tenant_id` column) and their columns, read at start-up.
/// Partitions are not tables here: rows are reached through their parent (migration 0008).
#[derive(Debug, Default, Clone)]
pub struct Schema {
    pub tables: HashMap<String, HashMap<String, Column>>,
    /// Names of the constraints (and unique indexes) of tenant tables that span tenants: the
    /// ones that make their columns [`Column::db_assigned`]. Never reported to a plugin.
    pub global_constraints: HashSet<String>,
    /// Plugin-owned tables (`db::plugin_storage`): plugin name → its short table name → the
    /// physical table. Plugins reach them only through `Grants::physical`.
    pub owned: HashMap<String, HashMap<String, String>>,
}

/// Unique and exclusion indexes (which back primary-key, unique and exclusion constraints,
/// under the same name) whose key columns do not include `tenant_id`, with every column they
/// read: key columns, `INCLUDE` columns, and columns of index expressions and predicates
/// (recorded in `pg_depend`). Then foreign keys whose columns do not include `tenant_id`: their
/// check ignores row-level security, so it would tell whether another org's row exists.
const GLOBAL_CONSTRAINTS_SQL: &str = "\
    SELECT t.relname::text, ix.relname::text, a.attname::text \
    FROM pg_index i \
    JOIN pg_class t ON t.oid = i.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public' \
    JOIN pg_class ix ON ix.oid = i.indexrelid \
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped \
    WHERE (i.indisunique OR i.indisexclusion) \
      AND NOT EXISTS (SELECT 1 FROM pg_attribute k, generate_series(0, i.indnkeyatts - 1) AS pos \
                      WHERE k.attrelid = t.oid AND k.attname = 'tenant_id' AND i.indkey[pos] = k.attnum) \
      AND (a.attnum = ANY (i.indkey) \
           OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid \
                      AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.refobjsubid = a.attnum)) \
    UNION ALL \
    SELECT t.relname::text, c.conname::text, a.attname::text \
    FROM pg_constraint c \
    JOIN pg_class t ON t.oid = c.conrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public' \
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (c.conkey) \
    WHERE c.contype = 'f' \
      AND NOT EXISTS (SELECT 1 FROM pg_attribute k \
                      WHERE k.attrelid = t.oid AND k.attname = 'tenant_id' AND k.attnum = ANY (c.conkey))";

impl Schema {
    pub async fn load<'e>(exec: impl PgExecutor<'e> + Copy) -> Result<Schema> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT c.table_name::text, c.column_name::text, c.udt_name::text \
             FROM information_schema.columns c \
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
               AND NOT EXISTS (SELECT 1 FROM pg_class p JOIN pg_namespace pn ON pn.oid = p.relnamespace AND pn.nspname = 'public' \
                               WHERE p.relname = c.table_name AND p.relispartition) \
               AND EXISTS (SELECT 1 FROM information_schema.columns k WHERE k.table_schema = 'public' \
                           AND k.table_name = c.table_name AND k.column_name = 'tenant_id')",
        )
        .fetch_all(exec)
        .await?;
        let mut tables: HashMap<String, HashMap<String, Column>> = HashMap::new();
        for (table, column, udt) in rows {
            let kind = match udt.as_str() {
                "bool" => Kind::Bool,
                "int2" | "int4" | "int8" => Kind::Int,
                "float4" | "float8" | "numeric" => Kind::Float,
                "json" | "jsonb" => Kind::Json,
                "uuid" => Kind::Uuid,
                "timestamptz" | "timestamp" | "date" => Kind::Timestamp,
                _ => Kind::Text,
            };
            tables.entry(table).or_default().insert(column, Column { kind, sql_type: udt, db_assigned: false });
        }
        let global: Vec<(String, String, String)> = sqlx::query_as(GLOBAL_CONSTRAINTS_SQL).fetch_all(exec).await?;
        let mut global_constraints = HashSet::new();
        for (table, constraint, column) in global {
            // Platform tables have global keys too; only tenant tables concern plugins.
            let Some(columns) = tables.get_mut(&table) else { continue };
            if let Some(c) = columns.get_mut(&column) {
                c.db_assigned = true;
            }
            global_constraints.insert(constraint);
        }
        let mut owned: HashMap<String, HashMap<String, String>> = HashMap::new();
        for t in tables.keys() {
            if let Some((plugin, short)) = super::plugin_storage::split_physical(t) {
                owned.entry(plugin).or_default().insert(short, t.clone());
            }
        }
        Ok(Schema { tables, global_constraints, owned })
    }

    /// The physical table a grant or short name stands for, for a route of `plugin`: the
    /// plugin's own table `short`, or another plugin's `owner.table`.
    pub fn owned_table(&self, plugin: &str, name: &str) -> Option<&str> {
        let (owner, short) = name.split_once('.').unwrap_or((plugin, name));
        self.owned.get(owner)?.get(short).map(String::as_str)
    }

    pub fn has_table(&self, t: &str) -> bool {
        self.tables.contains_key(t)
    }
}

/// A statement ready to run: SQL, arguments, and how to decode the returned columns.
pub struct Statement {
    pub sql: String,
    pub args: PgArguments,
    pub returns: Vec<(String, Kind)>,
    /// What was bound, in order (`args` cannot be read back); checked against `args` in tests.
    #[cfg(test)]
    pub(crate) bound: Vec<tests::Bound>,
}

struct Builder<'s> {
    table: &'s str,
    columns: &'s HashMap<String, Column>,
    sql: String,
    args: PgArguments,
    n: usize,
    /// Set when the statement is one of a batch: values go to its text array instead.
    batch: Option<&'s mut BatchValues>,
    #[cfg(test)]
    bound: Vec<tests::Bound>,
}

/// What the statements of one batch bind: every value as text in one array (`$2` of
/// `gateway_batch`, cast back to the column's type in the statement), and what the statements
/// before the current one return, for `earlier` cells (read from `$3`).
#[derive(Default)]
pub struct BatchValues {
    pub params: Vec<Option<String>>,
    /// Per earlier statement: the columns it returns and their kinds.
    pub returns: Vec<Vec<(String, Kind)>>,
}

type Check<T> = std::result::Result<T, DbError>;

fn json_key_ok(k: &str) -> bool {
    (1..=64).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A float as PostgreSQL's `float8` input reads it back exactly.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        // Rust's shortest round-trip form.
        format!("{f:?}")
    }
}

fn quote(ident: &str) -> String {
    // Identifiers come from the schema; quoting is still applied so no name is ever parsed.
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl<'s> Builder<'s> {
    fn new(schema: &'s Schema, table: &'s str, tenant: Uuid) -> Check<Builder<'s>> {
        let columns = schema.tables.get(table).ok_or_else(|| DbError::UnknownTable(table.to_string()))?;
        let mut args = PgArguments::default();
        args.add(tenant).map_err(|e| DbError::Invalid(e.to_string()))?;
        Ok(Builder {
            table,
            columns,
            sql: String::new(),
            args,
            n: 1,
            batch: None,
            #[cfg(test)]
            bound: vec![tests::Bound::Uuid(tenant)],
        })
    }

    fn in_batch(mut self, batch: Option<&'s mut BatchValues>) -> Builder<'s> {
        self.batch = batch;
        self
    }

    fn column(&self, name: &str) -> Check<&'s Column> {
        if name == TENANT_COLUMN {
            return Err(DbError::TenantColumnReserved);
        }
        self.columns.get(name).ok_or_else(|| DbError::UnknownColumn(format!("{}.{name}", self.table)))
    }

    /// A column the plugin gives a value to (insert, do-update, update set): the same answer
    /// for a [`Column::db_assigned`] column whatever the value, before anything is bound.
    fn writable(&self, name: &str) -> Check<&'s Column> {
        let col = self.column(name)?;
        if col.db_assigned {
            return Err(DbError::Invalid(format!("column {name} is assigned by the database")));
        }
        Ok(col)
    }

    /// Binds `v` and returns the placeholder, cast to the column's type.
    fn bind(&mut self, v: &Value, col: &Column) -> Check<String> {
        match v {
            Value::Earlier(e) => return self.earlier(e, col),
            Value::JsonFilled(j) => return self.json_filled(j, col),
            _ => {}
        }
        let compatible = matches!(
            (v, col.kind),
            (Value::Null, _)
                | (Value::Boolean(_), Kind::Bool)
                | (Value::Integer(_), Kind::Int | Kind::Float)
                | (Value::Float(_), Kind::Float)
                | (Value::Json(_), Kind::Json)
                | (Value::Uuid(_), Kind::Uuid | Kind::Text)
                | (Value::Timestamp(_), Kind::Timestamp | Kind::Text)
                | (Value::Text(_), Kind::Text | Kind::Uuid | Kind::Timestamp | Kind::Json)
        );
        if !compatible {
            return Err(DbError::Invalid(format!("value kind does not fit a {} column", col.sql_type)));
        }
        if self.batch.is_some() {
            let text = match v {
                Value::Null => None,
                Value::Boolean(b) => Some(b.to_string()),
                Value::Integer(i) => Some(i.to_string()),
                Value::Float(f) => Some(float_text(*f)),
                Value::Text(s) | Value::Json(s) | Value::Uuid(s) | Value::Timestamp(s) => Some(s.clone()),
                Value::Earlier(_) | Value::JsonFilled(_) => unreachable!("handled above"),
            };
            #[cfg(test)]
            self.bound.push(tests::Bound::of(v));
            return Ok(format!("{}::{}", self.push_param(text), quote(&col.sql_type)));
        }
        let r = match v {
            Value::Null => self.args.add(None::<String>),
            Value::Boolean(b) => self.args.add(*b),
            Value::Integer(i) => self.args.add(*i),
            Value::Float(f) => self.args.add(*f),
            Value::Text(s) | Value::Json(s) | Value::Uuid(s) | Value::Timestamp(s) => self.args.add(s.clone()),
            Value::Earlier(_) | Value::JsonFilled(_) => unreachable!("handled above"),
        };
        r.map_err(|e| DbError::Invalid(e.to_string()))?;
        #[cfg(test)]
        self.bound.push(tests::Bound::of(v));
        self.n += 1;
        Ok(format!("${}::{}", self.n, quote(&col.sql_type)))
    }

    /// In a batch: appends a value to the batch's array and returns its element (1-based).
    fn push_param(&mut self, text: Option<String>) -> String {
        let batch = self.batch.as_deref_mut().expect("only in a batch");
        batch.params.push(text);
        format!("$2[{}]", batch.params.len())
    }

    /// The SQL reading an earlier statement's cell from the results so far (`$3`), as jsonb,
    /// after checking the reference; and the cell's kind.
    fn cell(&self, e: &Earlier) -> Check<(String, Kind)> {
        let batch = self
            .batch
            .as_deref()
            .ok_or_else(|| DbError::Invalid("earlier and json-filled values are only for batch statements".into()))?;
        let returns = batch
            .returns
            .get(e.statement as usize)
            .ok_or_else(|| DbError::Invalid(format!("earlier statement {} is not before this one", e.statement)))?;
        let (i, (_, kind)) = returns
            .iter()
            .enumerate()
            .find(|(_, (c, _))| *c == e.column)
            .ok_or_else(|| DbError::Invalid(format!("earlier statement {} returns no column {}", e.statement, e.column)))?;
        Ok((format!("($3 -> {} -> 'rows' -> {} -> {i})", e.statement, e.row), *kind))
    }

    fn earlier(&mut self, e: &Earlier, col: &Column) -> Check<String> {
        let (cell, kind) = self.cell(e)?;
        let compatible = matches!(
            (kind, col.kind),
            (Kind::Bool, Kind::Bool)
                | (Kind::Int, Kind::Int | Kind::Float)
                | (Kind::Float, Kind::Float)
                | (Kind::Json, Kind::Json)
                | (Kind::Uuid, Kind::Uuid | Kind::Text)
                | (Kind::Timestamp, Kind::Timestamp | Kind::Text)
                | (Kind::Text, Kind::Text | Kind::Uuid | Kind::Timestamp | Kind::Json)
        );
        if !compatible {
            return Err(DbError::Invalid(format!("earlier {} does not fit a {} column", e.column, col.sql_type)));
        }
        // `#>> '{}'`: the cell as text (a JSON null stays SQL null), then the column's cast.
        Ok(format!("({cell} #>> '{{}}')::{}", quote(&col.sql_type)))
    }

    fn json_filled(&mut self, j: &JsonFilled, col: &Column) -> Check<String> {
        if col.kind != Kind::Json {
            return Err(DbError::Invalid(format!("json-filled does not fit a {} column", col.sql_type)));
        }
        if self.batch.is_none() {
            return Err(DbError::Invalid("earlier and json-filled values are only for batch statements".into()));
        }
        if !matches!(serde_json::from_str::<serde_json::Value>(&j.document), Ok(serde_json::Value::Object(_))) {
            return Err(DbError::Invalid("json-filled document must be a JSON object".into()));
        }
        let mut expr = format!("{}::jsonb", self.push_param(Some(j.document.clone())));
        for (path, e) in &j.fill {
            if path.is_empty() || path.len() > 8 || !path.iter().all(|k| json_key_ok(k)) {
                return Err(DbError::Invalid("JSON path keys are 1-64 characters of [A-Za-z0-9_-]".into()));
            }
            let (cell, _) = self.cell(e)?;
            // Keys are spliced as literals: their alphabet has no quote, comma or brace.
            expr = format!("jsonb_set({expr}, '{{{}}}', COALESCE({cell}, 'null'::jsonb), true)", path.join(","));
        }
        Ok(format!("({expr})::{}", quote(&col.sql_type)))
    }

    fn bind_text(&mut self, s: &str) -> Check<String> {
        if self.batch.is_some() {
            #[cfg(test)]
            self.bound.push(tests::Bound::Text(s.to_string()));
            return Ok(format!("{}::text", self.push_param(Some(s.to_string()))));
        }
        self.args.add(s.to_string()).map_err(|e| DbError::Invalid(e.to_string()))?;
        #[cfg(test)]
        self.bound.push(tests::Bound::Text(s.to_string()));
        self.n += 1;
        Ok(format!("${}::text", self.n))
    }

    /// The SQL for a column reference: the column, or `col #>> $n::text[]` for a JSON path.
    fn target(&mut self, r: &ColumnRef) -> Check<(String, Option<&'s Column>)> {
        let col = self.column(&r.column)?;
        if r.path.is_empty() {
            return Ok((quote(&r.column), Some(col)));
        }
        if col.kind != Kind::Json {
            return Err(DbError::Invalid(format!("{} is not a JSON column", r.column)));
        }
        if r.path.len() > 8 || !r.path.iter().all(|k| json_key_ok(k)) {
            return Err(DbError::Invalid("JSON path keys are 1-64 characters of [A-Za-z0-9_-]".into()));
        }
        // Keys are spliced as literals (their alphabet has no quote or backslash) so that the
        // expression matches expression indexes like ((props->>'idemKey')); a bound parameter
        // would hide it from the planner's generic plans.
        let mut expr = quote(&r.column);
        for (i, key) in r.path.iter().enumerate() {
            let op = if i + 1 == r.path.len() { "->>" } else { "->" };
            expr = format!("{expr} {op} '{key}'");
        }
        Ok((format!("({expr})"), None))
    }

    fn filters(&mut self, filters: &[Filter]) -> Check<()> {
        write!(self.sql, " WHERE {} = $1", quote(TENANT_COLUMN)).unwrap();
        for f in filters {
            let (expr, col) = self.target(&f.target)?;
            let op = match f.op {
                Comparison::IsNull => {
                    write!(self.sql, " AND {expr} IS NULL").unwrap();
                    continue;
                }
                Comparison::IsNotNull => {
                    write!(self.sql, " AND {expr} IS NOT NULL").unwrap();
                    continue;
                }
                Comparison::Eq => "=",
                Comparison::Ne => "<>",
                Comparison::Lt => "<",
                Comparison::Le => "<=",
                Comparison::Gt => ">",
                Comparison::Ge => ">=",
            };
            if matches!(f.value, Value::Null) {
                return Err(DbError::Invalid("compare with null using is-null / is-not-null".into()));
            }
            let placeholder = match col {
                Some(c) => self.bind(&f.value, c)?,
                None => match &f.value {
                    Value::Earlier(e) => format!("({} #>> '{{}}')", self.cell(e)?.0),
                    Value::JsonFilled(_) => return Err(DbError::Invalid("a JSON path compares with text, not a document".into())),
                    Value::Text(s) | Value::Uuid(s) | Value::Timestamp(s) | Value::Json(s) => self.bind_text(s)?,
                    Value::Integer(i) => self.bind_text(&i.to_string())?,
                    Value::Float(x) => self.bind_text(&x.to_string())?,
                    Value::Boolean(b) => self.bind_text(&b.to_string())?,
                    Value::Null => unreachable!(),
                },
            };
            write!(self.sql, " AND {expr} {op} {placeholder}").unwrap();
        }
        Ok(())
    }

    /// `RETURNING`/select list: each column cast to how we decode it.
    fn output(&self, cols: &[String]) -> Check<(String, Vec<(String, Kind)>)> {
        let mut list = Vec::with_capacity(cols.len());
        let mut kinds = Vec::with_capacity(cols.len());
        for c in cols {
            let col = self.column(c)?;
            let cast = match col.kind {
                Kind::Bool => "",
                Kind::Int => "::int8",
                Kind::Float => "::float8",
                Kind::Text | Kind::Json | Kind::Uuid => "::text",
                Kind::Timestamp => "",
            };
            let mut expr = if col.kind == Kind::Timestamp {
                // RFC 3339 in UTC, whatever the session time zone.
                format!("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", quote(c))
            } else {
                format!("{}{cast}", quote(c))
            };
            if self.batch.is_some() {
                // Named, so that the batch's wrapper can collect them.
                write!(expr, " AS \"c{}\"", kinds.len()).unwrap();
            }
            list.push(expr);
            kinds.push((c.clone(), col.kind));
        }
        Ok((list.join(", "), kinds))
    }

    fn finish(self, returns: Vec<(String, Kind)>) -> Statement {
        Statement {
            sql: self.sql,
            args: self.args,
            returns,
            #[cfg(test)]
            bound: self.bound,
        }
    }
}

pub fn select(schema: &Schema, tenant: Uuid, q: &SelectQuery, cap: u32) -> Check<Statement> {
    select_in(schema, tenant, q, cap, None)
}

/// [`select`], as a statement of a batch when `batch` is given.
pub fn select_in<'s>(schema: &'s Schema, tenant: Uuid, q: &'s SelectQuery, cap: u32, batch: Option<&'s mut BatchValues>) -> Check<Statement> {
    if q.columns.is_empty() {
        return Err(DbError::Invalid("select needs at least one column".into()));
    }
    let mut b = Builder::new(schema, &q.table, tenant)?.in_batch(batch);
    let (list, returns) = b.output(&q.columns)?;
    b.sql = format!("SELECT {list} FROM {}", quote(&q.table));
    b.filters(&q.filters)?;
    if !q.order_by.is_empty() {
        let mut parts = Vec::new();
        for o in &q.order_by {
            let (expr, _) = b.target(&o.target)?;
            parts.push(format!("{expr} {}", if o.descending { "DESC" } else { "ASC" }));
        }
        write!(b.sql, " ORDER BY {}", parts.join(", ")).unwrap();
    }
    // One row past the cap tells "too many" from "exactly the cap" (in u64: no wrap at u32::MAX).
    let limit = q.limit.map(|l| u64::from(l.min(cap))).unwrap_or(u64::from(cap) + 1);
    write!(b.sql, " LIMIT {limit}").unwrap();
    if q.for_update {
        b.sql.push_str(" FOR UPDATE");
    }
    Ok(b.finish(returns))
}

pub fn insert(schema: &Schema, tenant: Uuid, q: &InsertQuery) -> Check<Statement> {
    insert_in(schema, tenant, q, None)
}

/// [`insert`], as a statement of a batch when `batch` is given.
pub fn insert_in<'s>(schema: &'s Schema, tenant: Uuid, q: &'s InsertQuery, batch: Option<&'s mut BatchValues>) -> Check<Statement> {
    if q.columns.is_empty() || q.rows.is_empty() {
        return Err(DbError::Invalid("insert needs columns and at least one row".into()));
    }
    let mut b = Builder::new(schema, &q.table, tenant)?.in_batch(batch);
    let mut cols = Vec::with_capacity(q.columns.len());
    for c in &q.columns {
        cols.push(b.writable(c)?);
    }
    let mut names = vec![quote(TENANT_COLUMN)];
    names.extend(q.columns.iter().map(|c| quote(c)));
    let mut values = Vec::with_capacity(q.rows.len());
    for row in &q.rows {
        if row.len() != cols.len() {
            return Err(DbError::Invalid(format!("row has {} values for {} columns", row.len(), cols.len())));
        }
        let mut ph = vec!["$1".to_string()];
        for (v, col) in row.iter().zip(&cols) {
            ph.push(b.bind(v, col)?);
        }
        values.push(format!("({})", ph.join(", ")));
    }
    b.sql = format!("INSERT INTO {} ({}) VALUES {}", quote(&q.table), names.join(", "), values.join(", "));
    if let Some(oc) = &q.on_conflict {
        if oc.target.is_empty() {
            return Err(DbError::Invalid("on-conflict needs a target".into()));
        }
        let mut target = vec![quote(TENANT_COLUMN)];
        for c in &oc.target {
            b.column(c)?;
            target.push(quote(c));
        }
        write!(b.sql, " ON CONFLICT ({})", target.join(", ")).unwrap();
        match &oc.action {
            ConflictAction::DoNothing => b.sql.push_str(" DO NOTHING"),
            ConflictAction::DoUpdate(set) => {
                if set.is_empty() {
                    return Err(DbError::Invalid("do-update needs columns".into()));
                }
                let mut parts = Vec::new();
                for c in set {
                    b.writable(c)?;
                    parts.push(format!("{} = EXCLUDED.{}", quote(c), quote(c)));
                }
                write!(b.sql, " DO UPDATE SET {}", parts.join(", ")).unwrap();
            }
        }
    }
    returning(b, &q.returning)
}

pub fn update(schema: &Schema, tenant: Uuid, q: &UpdateQuery) -> Check<Statement> {
    update_in(schema, tenant, q, None)
}

/// [`update`], as a statement of a batch when `batch` is given.
pub fn update_in<'s>(schema: &'s Schema, tenant: Uuid, q: &'s UpdateQuery, batch: Option<&'s mut BatchValues>) -> Check<Statement> {
    if q.set.is_empty() {
        return Err(DbError::Invalid("update needs at least one assignment".into()));
    }
    let mut b = Builder::new(schema, &q.table, tenant)?.in_batch(batch);
    let mut parts = Vec::new();
    for a in &q.set {
        let col = b.writable(&a.column)?;
        let ph = b.bind(&a.value, col)?;
        parts.push(format!("{} = {ph}", quote(&a.column)));
    }
    b.sql = format!("UPDATE {} SET {}", quote(&q.table), parts.join(", "));
    b.filters(&q.filters)?;
    returning(b, &q.returning)
}

pub fn delete(schema: &Schema, tenant: Uuid, q: &DeleteQuery) -> Check<Statement> {
    delete_in(schema, tenant, q, None)
}

/// [`delete`], as a statement of a batch when `batch` is given.
pub fn delete_in<'s>(schema: &'s Schema, tenant: Uuid, q: &'s DeleteQuery, batch: Option<&'s mut BatchValues>) -> Check<Statement> {
    let mut b = Builder::new(schema, &q.table, tenant)?.in_batch(batch);
    b.sql = format!("DELETE FROM {}", quote(&q.table));
    b.filters(&q.filters)?;
    returning(b, &q.returning)
}

fn returning(mut b: Builder<'_>, cols: &[String]) -> Check<Statement> {
    if cols.is_empty() {
        return Ok(b.finish(Vec::new()));
    }
    let (list, returns) = b.output(cols)?;
    write!(b.sql, " RETURNING {list}").unwrap();
    Ok(b.finish(returns))
}

/// Decodes rows by the kinds the statement promised.
pub fn decode(rows: &[PgRow], returns: &[(String, Kind)]) -> std::result::Result<Vec<Vec<Value>>, sqlx::Error> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut vals = Vec::with_capacity(returns.len());
        for (i, (_, kind)) in returns.iter().enumerate() {
            let v = match kind {
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Boolean),
                Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Integer),
                Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
                Kind::Json => row.try_get::<Option<String>, _>(i)?.map(Value::Json),
                Kind::Uuid => row.try_get::<Option<String>, _>(i)?.map(Value::Uuid),
                Kind::Timestamp => row.try_get::<Option<String>, _>(i)?.map(Value::Timestamp),
            };
            vals.push(v.unwrap_or(Value::Null));
        }
        out.push(vals);
    }
    Ok(out)
}

/// Runs a statement in the invocation's transaction.
pub async fn run(tx: &mut TenantTx, st: Statement) -> std::result::Result<Rows, sqlx::Error> {
    let columns: Vec<String> = st.returns.iter().map(|(c, _)| c.clone()).collect();
    if st.returns.is_empty() {
        let r = sqlx::query_with(&st.sql, st.args).execute(tx.conn()).await?;
        return Ok(Rows { columns, rows: Vec::new(), affected: r.rows_affected() });
    }
    let rows = sqlx::query_with(&st.sql, st.args).fetch_all(tx.conn()).await?;
    let values = decode(&rows, &st.returns)?;
    Ok(Rows { columns, affected: values.len() as u64, rows: values })
}

/// A statement of a batch as `gateway_batch` runs it, returning `{"n": affected, "rows":
/// [[cells]]}`. The text does not depend on the statement's place in the batch, so that the
/// function's prepared statements are shared by every batch that uses the same statement.
/// Rows keep the statement's order: the aggregate reads its (sorted, limited) subquery in
/// order, PostgreSQL's documented behaviour for a plain aggregate over one subquery.
pub fn batch_sql(st: &Statement) -> String {
    if st.returns.is_empty() {
        return format!(
            "WITH q AS ({} RETURNING 1) SELECT jsonb_build_object('n', count(*), 'rows', '[]'::jsonb) FROM q",
            st.sql
        );
    }
    let cells: Vec<String> = (0..st.returns.len()).map(|i| format!("q.\"c{i}\"")).collect();
    format!(
        "WITH q AS ({}) SELECT jsonb_build_object('n', count(*), 'rows', \
         COALESCE(jsonb_agg(jsonb_build_array({})), '[]'::jsonb)) FROM q",
        st.sql,
        cells.join(", ")
    )
}

/// `lock` / `try-lock` of a batch, on the same hash as [`lock`] (the tenant is `$1`, a uuid
/// whose text form is the one [`lock`] binds), the key being the batch's next value.
pub fn batch_lock_sql(key: &str, wait: bool, batch: &mut BatchValues) -> (String, Vec<(String, Kind)>) {
    batch.params.push(Some(key.to_string()));
    let hash = format!("hashtextextended($1::text || ':' || $2[{}]::text, 0)", batch.params.len());
    if wait {
        (format!("SELECT jsonb_build_object('n', 0, 'rows', '[]'::jsonb) FROM pg_advisory_xact_lock({hash})"), Vec::new())
    } else {
        (
            format!(
                "SELECT jsonb_build_object('n', 1, 'rows', jsonb_build_array(jsonb_build_array(l))) \
                 FROM pg_try_advisory_xact_lock({hash}) AS l"
            ),
            vec![("locked".to_string(), Kind::Bool)],
        )
    }
}

/// Runs a batch's statements in one round trip. On failure: the index of the statement that
/// failed, when the database names it.
pub async fn run_batch(
    tx: &mut TenantTx,
    statements: Vec<String>,
    batch: BatchValues,
) -> std::result::Result<Vec<Rows>, (Option<usize>, sqlx::Error)> {
    let org = tx.org();
    let out: serde_json::Value = sqlx::query_scalar("SELECT gateway_batch($1, $2, $3)")
        .bind(org)
        .bind(statements)
        .bind(batch.params)
        .fetch_one(tx.conn())
        .await
        .map_err(|e| (failed_index(&e), e))?;
    let results = out.as_array().cloned().unwrap_or_default();
    let mut all = Vec::with_capacity(results.len());
    for (i, (r, returns)) in results.iter().zip(&batch.returns).enumerate() {
        decode_cells(r, returns).map(|rows| all.push(rows)).map_err(|e| (Some(i), e))?;
    }
    Ok(all)
}

/// Which statement of a batch an error came from: `gateway_batch` runs statement N as
/// `/* batch:N */ …`, which the error's context quotes.
fn failed_index(e: &sqlx::Error) -> Option<usize> {
    let sqlx::Error::Database(d) = e else { return None };
    let context = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?.r#where()?;
    let at = context.find("/* batch:")? + "/* batch:".len();
    context[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// One statement's `{"n", "rows"}` as `rows`, each cell by the kind its column promised.
fn decode_cells(r: &serde_json::Value, returns: &[(String, Kind)]) -> std::result::Result<Rows, sqlx::Error> {
    use serde_json::Value as J;
    let bad = || sqlx::Error::Decode("unexpected batch result".into());
    let affected = r.get("n").and_then(J::as_u64).ok_or_else(bad)?;
    let mut rows = Vec::new();
    for row in r.get("rows").and_then(J::as_array).ok_or_else(bad)? {
        let cells = row.as_array().ok_or_else(bad)?;
        let mut vals = Vec::with_capacity(returns.len());
        for ((_, kind), cell) in returns.iter().zip(cells) {
            let text = || cell.as_str().map(str::to_string).ok_or_else(bad);
            vals.push(match (kind, cell) {
                (_, J::Null) => Value::Null,
                (Kind::Bool, c) => Value::Boolean(c.as_bool().ok_or_else(bad)?),
                (Kind::Int, c) => Value::Integer(c.as_i64().ok_or_else(bad)?),
                // NaN and the infinities come as strings.
                (Kind::Float, J::String(s)) => Value::Float(s.parse().map_err(|_| bad())?),
                (Kind::Float, c) => Value::Float(c.as_f64().ok_or_else(bad)?),
                (Kind::Text, _) => Value::Text(text()?),
                (Kind::Json, _) => Value::Json(text()?),
                (Kind::Uuid, _) => Value::Uuid(text()?),
                (Kind::Timestamp, _) => Value::Timestamp(text()?),
            });
        }
        rows.push(vals);
    }
    let columns = returns.iter().map(|(c, _)| c.clone()).collect();
    Ok(Rows { columns, rows, affected })
}

/// Binds the tenant (as text), then the key.
const TRY_LOCK_SQL: &str = "SELECT pg_try_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 0))";
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2::text, 0))";

/// `pg_try_advisory_xact_lock` on the same hash as [`lock`].
pub async fn try_lock(tx: &mut TenantTx, key: &str) -> std::result::Result<bool, sqlx::Error> {
    sqlx::query_scalar(TRY_LOCK_SQL)
        .bind(tx.org().to_string())
        .bind(key)
        .fetch_one(tx.conn())
        .await
}

/// `pg_advisory_xact_lock` on a 64-bit hash of tenant and key.
pub async fn lock(tx: &mut TenantTx, key: &str) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(LOCK_SQL)
        .bind(tx.org().to_string())
        .bind(key)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Maps a database error to what the plugin is told.
pub fn classify(e: &sqlx::Error) -> DbError {
    if crate::error::is_unavailable(e) {
        if let sqlx::Error::Database(d) = e {
            if d.code().as_deref() == Some("57014") {
                return DbError::Timeout;
            }
        }
        return DbError::Unavailable;
    }
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            let name = d.constraint().unwrap_or("").to_string();
            match code.as_str() {
                "23505" => DbError::UniqueViolation(name),
                c if c.starts_with("23") => DbError::ConstraintViolation(name),
                "42P10" => DbError::Invalid("on-conflict target matches no unique constraint".into()),
                // The query was well formed; the database refused a value it carries (text
                // with U+0000, a number out of range, text that is no uuid or timestamp): the
                // data's fault, like a check constraint's, so the same variant, named by
                // PostgreSQL's condition name since no constraint has one.
                c if c.starts_with("22") => DbError::ConstraintViolation(data_exception_name(c).into()),
                "40P01" | "40001" => DbError::Unavailable,
                _ => DbError::Invalid(format!("rejected by the database ({code})")),
            }
        }
        _ => DbError::Unavailable,
    }
}

/// PostgreSQL's condition name of a class-22 SQLSTATE (the ones a bound value can cause).
pub fn data_exception_name(sqlstate: &str) -> &'static str {
    match sqlstate {
        "22001" => "string_data_right_truncation",
        "22003" => "numeric_value_out_of_range",
        "22004" => "null_value_not_allowed",
        "22007" => "invalid_datetime_format",
        "22008" => "datetime_field_overflow",
        "22009" => "invalid_time_zone_displacement_value",
        "22012" => "division_by_zero",
        "22015" => "interval_field_overflow",
        "22021" => "character_not_in_repertoire",
        "22023" => "invalid_parameter_value",
        "22P02" => "invalid_text_representation",
        "22P05" => "untranslatable_character",
        "22030" => "duplicate_json_object_key_value",
        "22032" => "invalid_json_text",
        _ => "data_exception",
    }
}

#[cfg(test)]
#[path = "structured_tests.rs"]
pub(crate) mod tests;
