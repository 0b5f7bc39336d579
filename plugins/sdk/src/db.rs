//! A query builder over `tenant-db`. The host scopes every statement to the caller's org;
//! these helpers only make the structured queries pleasant to write.
//!
//! ```ignore
//! let rows = db::select("crm_events")
//!     .columns(&["id", "type"])
//!     .eq("contact_id", Value::uuid(id))
//!     .lt("created_at", Value::timestamp(before))
//!     .order_by("created_at", true)
//!     .fetch()?;
//! ```
//!
//! Values: [`Value::text`], [`Value::uuid`], [`Value::timestamp`], [`Value::json`] and the
//! `NULL`-when-absent [`Value::opt_text`] / [`Value::opt_uuid`] build them; [`Value::as_str`]
//! and [`Value::as_int`] read them. Filters: [`Filtered`] (`eq`, `ne`, `lt`, `le`, `gt`, `ge`,
//! `json_eq`, `where_null`, `where_not_null`), joined with AND. The contract has no `IN`
//! comparison: match a set with one query per value.
//!
//! [`batch`] sends several of these in one round trip (`tenant-db.batch`, WIT 0.2): each
//! statement sees the ones before it, and a later one can use what an earlier one returned.
//!
//! ```ignore
//! let mut b = db::batch();
//! let contact = b.insert(db::insert("crm_contacts").columns(&["name"]).row(vec![Value::text("Ann")]).returning(&["id"]));
//! b.insert(db::insert("contact_identities").columns(&["type", "value", "contact_id"])
//!     .row(vec![Value::text("email"), Value::text("ann@example.com"), contact.cell("id")]));
//! let done = b.run()?;
//! let id = done.first(contact).and_then(|r| r.str("id").map(str::to_string));
//! ```

pub use crate::bindings::gateway::plugin::tenant_db::{
    BatchError, ColumnRef, Comparison, ConflictAction, DbError, Earlier, Filter, JsonFilled, OnConflict, Order, Rows,
    Value,
};
use crate::bindings::gateway::plugin::tenant_db::{
    self as raw, Assignment, DeleteQuery, InsertQuery, SelectQuery, Statement, UpdateQuery,
};
use crate::HandlerError;

impl Value {
    /// A text value (`text`, `varchar`; also accepted for uuid, timestamp and json columns).
    pub fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    /// A UUID in its text form, e.g. a path parameter or a returned id.
    pub fn uuid(s: &str) -> Value {
        Value::Uuid(s.to_string())
    }

    /// A timestamp as RFC 3339 text (for `timestamptz` / `timestamp` / `date` columns).
    pub fn timestamp(s: &str) -> Value {
        Value::Timestamp(s.to_string())
    }

    /// A JSON document, serialized, for `json` / `jsonb` columns.
    pub fn json(doc: &serde_json::Value) -> Value {
        Value::Json(doc.to_string())
    }

    /// In a [`batch`]: `doc` (a JSON object) with each top-level key set to an earlier
    /// statement's cell, e.g. `Value::json_filled(&json!({"type": "x"}), &[("event_id", event.at(0, "id"))])`.
    pub fn json_filled(doc: &serde_json::Value, fill: &[(&str, Earlier)]) -> Value {
        Value::JsonFilled(JsonFilled {
            document: doc.to_string(),
            fill: fill.iter().map(|(k, e)| (vec![k.to_string()], e.clone())).collect(),
        })
    }

    /// [`Value::text`], or `NULL` when absent.
    pub fn opt_text(s: Option<&str>) -> Value {
        s.map_or(Value::Null, Value::text)
    }

    /// [`Value::uuid`], or `NULL` when absent.
    pub fn opt_uuid(s: Option<&str>) -> Value {
        s.map_or(Value::Null, Value::uuid)
    }

    /// Text-like values (text, uuid, json, timestamp) as `&str`; `None` for anything else.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) | Value::Uuid(s) | Value::Json(s) | Value::Timestamp(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value; `None` for anything else.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// Whether this is `NULL`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

fn col(c: &str) -> ColumnRef {
    ColumnRef { column: c.to_string(), path: Vec::new() }
}

fn strings(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

/// Filters shared by select, update and delete. Every filter of a query must hold (AND).
///
/// Columns are checked against the route's grants and the live schema by the host; a value
/// whose kind does not fit the column is `invalid`.
pub trait Filtered: Sized {
    /// The query's filter list (what the builders below append to).
    fn filters(&mut self) -> &mut Vec<Filter>;

    /// `target <op> value`: the general form the other builders are shorthands for.
    fn filter(mut self, target: ColumnRef, op: Comparison, value: Value) -> Self {
        self.filters().push(Filter { target, op, value });
        self
    }
    /// `column = value`.
    fn eq(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Eq, value)
    }
    /// `column <> value`.
    fn ne(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Ne, value)
    }
    /// `column < value`.
    fn lt(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Lt, value)
    }
    /// `column <= value`.
    fn le(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Le, value)
    }
    /// `column > value`.
    fn gt(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Gt, value)
    }
    /// `column >= value`.
    fn ge(self, column: &str, value: Value) -> Self {
        self.filter(col(column), Comparison::Ge, value)
    }
    /// `column->'a'->>'b' = value` (text comparison).
    fn json_eq(self, column: &str, path: &[&str], value: &str) -> Self {
        let target = ColumnRef { column: column.to_string(), path: strings(path) };
        self.filter(target, Comparison::Eq, Value::text(value))
    }
    /// `column IS NULL`.
    fn where_null(self, column: &str) -> Self {
        self.filter(col(column), Comparison::IsNull, Value::Null)
    }
    /// `column IS NOT NULL`.
    fn where_not_null(self, column: &str) -> Self {
        self.filter(col(column), Comparison::IsNotNull, Value::Null)
    }
    /// `column = value` when there is a value, nothing otherwise: optional query parameters
    /// (`?status=open`) become filters without an `if` per parameter.
    fn eq_opt(self, column: &str, value: Option<Value>) -> Self {
        match value {
            Some(v) => self.eq(column, v),
            None => self,
        }
    }
    /// `from <= column < until`, each side only when given (a half-open range, the usual
    /// shape of a time window or a page of ids).
    fn between(self, column: &str, from: Option<Value>, until: Option<Value>) -> Self {
        let q = match from {
            Some(v) => self.ge(column, v),
            None => self,
        };
        match until {
            Some(v) => q.lt(column, v),
            None => q,
        }
    }
    /// Applies `f` only when `cond` holds: `.when(only_open, |q| q.where_null("closed_at"))`.
    fn when(self, cond: bool, f: impl FnOnce(Self) -> Self) -> Self {
        if cond {
            f(self)
        } else {
            self
        }
    }
}

pub struct Select(SelectQuery);

/// `SELECT` from a table the route grants `read` on.
pub fn select(table: &str) -> Select {
    Select(SelectQuery {
        table: table.to_string(),
        columns: Vec::new(),
        filters: Vec::new(),
        order_by: Vec::new(),
        limit: None,
        for_update: false,
    })
}

impl Filtered for Select {
    fn filters(&mut self) -> &mut Vec<Filter> {
        &mut self.0.filters
    }
}

impl Select {
    pub fn columns(mut self, cols: &[&str]) -> Self {
        self.0.columns = strings(cols);
        self
    }
    pub fn order_by(mut self, column: &str, descending: bool) -> Self {
        self.0.order_by.push(Order { target: col(column), descending });
        self
    }
    pub fn limit(mut self, n: u32) -> Self {
        self.0.limit = Some(n);
        self
    }
    pub fn for_update(mut self) -> Self {
        self.0.for_update = true;
        self
    }
    pub fn fetch(self) -> Result<Rows, DbError> {
        raw::select(&self.0)
    }
    /// The first row, if any.
    /// Every matching row deserialized into `T` (a `#[derive(Deserialize)]` struct whose
    /// fields are the selected columns; see [`Row::parse`]). A database error converts as
    /// `?` on [`DbError`] does; a row that does not fit `T` is a 502 naming the field.
    pub fn fetch_as<T: serde::de::DeserializeOwned>(self) -> Result<Vec<T>, HandlerError> {
        Row::all(self.fetch()?).iter().map(Row::parse).collect()
    }
    /// The first matching row as `T`, or `None` ([`Select::fetch_as`]).
    pub fn fetch_one_as<T: serde::de::DeserializeOwned>(self) -> Result<Option<T>, HandlerError> {
        self.fetch_one()?.as_ref().map(Row::parse).transpose()
    }
    pub fn fetch_one(self) -> Result<Option<Row>, DbError> {
        Ok(Row::first(self.limit(1).fetch()?))
    }
}

pub struct Insert(InsertQuery);

/// `INSERT` into a table the route grants `write` on; the host sets `tenant_id`.
pub fn insert(table: &str) -> Insert {
    Insert(InsertQuery {
        table: table.to_string(),
        columns: Vec::new(),
        rows: Vec::new(),
        on_conflict: None,
        returning: Vec::new(),
    })
}

impl Insert {
    pub fn columns(mut self, cols: &[&str]) -> Self {
        self.0.columns = strings(cols);
        self
    }
    pub fn row(mut self, values: Vec<Value>) -> Self {
        self.0.rows.push(values);
        self
    }
    pub fn on_conflict_do_nothing(mut self, target: &[&str]) -> Self {
        self.0.on_conflict = Some(OnConflict { target: strings(target), action: ConflictAction::DoNothing });
        self
    }
    pub fn on_conflict_update(mut self, target: &[&str], set: &[&str]) -> Self {
        self.0.on_conflict =
            Some(OnConflict { target: strings(target), action: ConflictAction::DoUpdate(strings(set)) });
        self
    }
    pub fn returning(mut self, cols: &[&str]) -> Self {
        self.0.returning = strings(cols);
        self
    }
    pub fn execute(self) -> Result<Rows, DbError> {
        raw::insert(&self.0)
    }
}

pub struct Update(UpdateQuery);

/// `UPDATE` a table the route grants `write` on; only the caller's org's rows are touched.
pub fn update(table: &str) -> Update {
    Update(UpdateQuery { table: table.to_string(), set: Vec::new(), filters: Vec::new(), returning: Vec::new() })
}

impl Filtered for Update {
    fn filters(&mut self) -> &mut Vec<Filter> {
        &mut self.0.filters
    }
}

impl Update {
    pub fn set(mut self, column: &str, value: Value) -> Self {
        self.0.set.push(Assignment { column: column.to_string(), value });
        self
    }
    pub fn returning(mut self, cols: &[&str]) -> Self {
        self.0.returning = strings(cols);
        self
    }
    pub fn execute(self) -> Result<Rows, DbError> {
        raw::update(&self.0)
    }
}

pub struct Delete(DeleteQuery);

/// `DELETE` from a table the route grants `write` on; only the caller's org's rows are touched.
pub fn delete(table: &str) -> Delete {
    Delete(DeleteQuery { table: table.to_string(), filters: Vec::new(), returning: Vec::new() })
}

impl Filtered for Delete {
    fn filters(&mut self) -> &mut Vec<Filter> {
        &mut self.0.filters
    }
}

impl Delete {
    pub fn returning(mut self, cols: &[&str]) -> Self {
        self.0.returning = strings(cols);
        self
    }
    pub fn execute(self) -> Result<Rows, DbError> {
        raw::delete(&self.0)
    }
}

/// Takes the org-scoped advisory lock on `key` for the rest of the invocation.
pub fn lock(key: &str) -> Result<(), DbError> {
    raw::lock(key)
}

/// Tries the org-scoped advisory lock on `key` without waiting; `false` if it is held.
pub fn try_lock(key: &str) -> Result<bool, DbError> {
    raw::try_lock(key)
}

/// One returned row, addressable by column name.
pub struct Row {
    columns: std::rc::Rc<Vec<String>>,
    values: Vec<Value>,
}

impl Row {
    /// Every row of a result.
    pub fn all(rows: Rows) -> Vec<Row> {
        let columns = std::rc::Rc::new(rows.columns);
        rows.rows.into_iter().map(|values| Row { columns: columns.clone(), values }).collect()
    }
    /// The first row of a result, if any (e.g. the one row an insert's `returning` gives).
    pub fn first(rows: Rows) -> Option<Row> {
        let Rows { columns, rows, .. } = rows;
        rows.into_iter().next().map(|values| Row { columns: std::rc::Rc::new(columns), values })
    }
    /// A column's value; `None` when the row has no such column.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns.iter().position(|c| c == column).and_then(|i| self.values.get(i))
    }
    /// Text-like values (text, uuid, json, timestamp) as `&str`; see [`Value::as_str`].
    pub fn str(&self, column: &str) -> Option<&str> {
        self.get(column)?.as_str()
    }
    /// An integer column; see [`Value::as_int`].
    pub fn int(&self, column: &str) -> Option<i64> {
        self.get(column)?.as_int()
    }
    /// The row as `T` (a `#[derive(Deserialize)]` struct), through [`Row::to_json`]: text,
    /// UUID and timestamp columns as `String`, integers as `i64`/`i32`, JSON columns as any
    /// deserializable type, `NULL` as `Option::None`. A mismatch is a 502 `PLUGIN_FAILED`
    /// naming the field: the plugin's own type disagrees with its table.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_value(self.to_json()).map_err(|e| crate::failed(&format!("row does not fit its type: {e}")))
    }
    /// The row as a JSON object (JSON columns embedded as documents).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (c, v) in self.columns.iter().zip(&self.values) {
            m.insert(c.clone(), value_to_json(v));
        }
        serde_json::Value::Object(m)
    }
}

/// A value as JSON: text-like values as strings, JSON columns embedded as documents (`null`
/// if unparsable), non-finite floats as `null`.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Integer(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(Into::into).unwrap_or(serde_json::Value::Null),
        Value::Text(s) | Value::Uuid(s) | Value::Timestamp(s) => s.clone().into(),
        Value::Json(s) => serde_json::from_str(s).unwrap_or(serde_json::Value::Null),
        // Batch-only inputs; the host never returns them.
        Value::Earlier(_) | Value::JsonFilled(_) => serde_json::Value::Null,
    }
}

impl From<DbError> for HandlerError {
    /// Database failures end the invocation. Unavailability is a 503; a constraint violation
    /// (which the host also reports for a value the database cannot store, such as text with
    /// U+0000, named by PostgreSQL's condition name) refused the request's data: 400
    /// `VALIDATION_FAILED`; anything else is the plugin's own failure, a 502.
    fn from(e: DbError) -> HandlerError {
        match e {
            DbError::Unavailable | DbError::Timeout => HandlerError::Unavailable("database unavailable".into()),
            DbError::ConstraintViolation(name) if name.is_empty() => crate::invalid("a value in the request cannot be stored"),
            DbError::ConstraintViolation(name) => crate::invalid(&format!("a value in the request cannot be stored ({name})")),
            other => HandlerError::Failed(format!("database: {}", describe(&other))),
        }
    }
}

/// A short description of a database error, for logs and messages.
pub fn describe(e: &DbError) -> String {
    match e {
        DbError::NotGranted(t) => format!("not granted: {t}"),
        DbError::UnknownTable(t) => format!("unknown table {t}"),
        DbError::UnknownColumn(c) => format!("unknown column {c}"),
        DbError::TenantColumnReserved => "tenant_id is reserved".into(),
        DbError::Invalid(m) => format!("invalid query: {m}"),
        DbError::UniqueViolation(c) => format!("unique violation {c}"),
        DbError::ConstraintViolation(c) => format!("constraint violation {c}"),
        DbError::Timeout => "timeout".into(),
        DbError::TooManyRows(n) => format!("more than {n} rows"),
        DbError::Unavailable => "unavailable".into(),
        DbError::Aborted => "transaction aborted".into(),
    }
}

/// Several statements sent in one round trip, run in order inside the invocation's
/// transaction (`tenant-db.batch`). Add statements with the builders' `into` methods or
/// [`Batch::select`] and friends, then [`Batch::run`].
///
/// Every statement is checked before any runs; if one fails in the database the rest do not
/// run and the invocation's transaction is aborted (its [`BatchError`] names the statement).
#[derive(Default)]
pub struct Batch {
    statements: Vec<Statement>,
}

/// A statement's place in a [`Batch`]: read its result from [`Done`], or use one of its
/// cells in a later statement of the same batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step(u32);

impl Step {
    /// The cell `column` of row `row` this statement returns, for a later statement.
    pub fn at(self, row: u32, column: &str) -> Earlier {
        Earlier { statement: self.0, row, column: column.to_string() }
    }
    /// As a value: the cell `column` of the first row this statement returns (`NULL` if none).
    pub fn cell(self, column: &str) -> Value {
        Value::Earlier(self.at(0, column))
    }
    /// The statement's index in its batch.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Starts a batch.
pub fn batch() -> Batch {
    Batch::default()
}

impl Batch {
    fn push(&mut self, st: Statement) -> Step {
        self.statements.push(st);
        Step(self.statements.len() as u32 - 1)
    }
    pub fn select(&mut self, q: Select) -> Step {
        self.push(Statement::Select(q.0))
    }
    pub fn insert(&mut self, q: Insert) -> Step {
        self.push(Statement::Insert(q.0))
    }
    pub fn update(&mut self, q: Update) -> Step {
        self.push(Statement::Update(q.0))
    }
    pub fn delete(&mut self, q: Delete) -> Step {
        self.push(Statement::Delete(q.0))
    }
    /// Waits for the org-scoped advisory lock on `key` (see [`lock`]).
    pub fn lock(&mut self, key: &str) -> Step {
        self.push(Statement::Lock(key.to_string()))
    }
    /// Tries the lock without waiting; its result has one row, column `locked`.
    pub fn try_lock(&mut self, key: &str) -> Step {
        self.push(Statement::TryLock(key.to_string()))
    }
    pub fn len(&self) -> usize {
        self.statements.len()
    }
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
    /// Sends the batch; an empty batch costs nothing.
    pub fn run(self) -> Result<Done, BatchError> {
        if self.statements.is_empty() {
            return Ok(Done(Vec::new()));
        }
        raw::batch(&self.statements).map(Done)
    }
}

/// A batch's results, one [`Rows`] per statement.
pub struct Done(Vec<Rows>);

impl Done {
    /// The rows a statement returned.
    pub fn rows(&self, step: Step) -> &Rows {
        &self.0[step.0 as usize]
    }
    /// The first row a statement returned, if any.
    pub fn first(&self, step: Step) -> Option<Row> {
        Row::first(self.rows(step).clone())
    }
    /// Every row a statement returned.
    pub fn all(&self, step: Step) -> Vec<Row> {
        Row::all(self.rows(step).clone())
    }
    /// Whether a `try_lock` statement got its lock.
    pub fn locked(&self, step: Step) -> bool {
        matches!(self.rows(step).rows.first().and_then(|r| r.first()), Some(Value::Boolean(true)))
    }
}

impl From<BatchError> for HandlerError {
    /// As the statement's own [`DbError`] would be.
    fn from(e: BatchError) -> HandlerError {
        e.error.into()
    }
}
