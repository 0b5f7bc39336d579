//! `tenant-db`: grants first, then the structured query is built by `db::structured` and run
//! in the invocation's transaction (opened on first use).

use wasmtime::component::HasData;

use crate::db::structured as sql;
use crate::plugin::bindings::tenant_db::{
    BatchError, DbError, DeleteQuery, Host, InsertQuery, Rows, SelectQuery, Statement, UpdateQuery,
};
use crate::plugin::state::DbState;
use crate::plugin::grants::Access;

pub struct Data;

impl HasData for Data {
    type Data<'a> = &'a mut DbState;
}

/// Statements per invocation, so a runaway plugin cannot hold a connection forever.
const MAX_STATEMENTS: u32 = 1_000;

/// A batch statement as built: its text, what it returns, the plugin's name for an owned
/// table it uses (`DbState::resolve`), and which row cap applies to its result.
struct Built {
    text: String,
    returns: Vec<(String, sql::Kind)>,
    alias: Option<(String, String)>,
    capped: Capped,
}

/// The row cap a statement's result is held to, as for the single calls.
enum Capped {
    /// More rows returned than the cap (selects).
    Rows,
    /// More rows changed or returned than the cap (updates, deletes).
    Changes,
    No,
}

/// Statements per batch.
pub const MAX_BATCH: usize = 64;

/// Connection slots per org: one org's invocations hold at most `cap` connections of the
/// plugin pool at once, so they can slow only each other down when they sit on them. Waiting
/// for a slot is bounded by the invocation's own wall-clock timeout.
pub struct OrgSlots {
    cap: std::sync::atomic::AtomicU32,
    orgs: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::sync::Arc<tokio::sync::Semaphore>>>,
}

impl OrgSlots {
    pub fn new(cap: u32) -> OrgSlots {
        OrgSlots { cap: cap.max(1).into(), orgs: Default::default() }
    }

    /// Changes the cap for orgs seen from now on.
    pub fn set_cap(&self, cap: u32) {
        self.cap.store(cap.max(1), std::sync::atomic::Ordering::Relaxed);
        self.orgs.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn acquire(&self, org: uuid::Uuid) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
            if orgs.len() > 10_000 {
                // Forget idle orgs (nobody holds their semaphore but the map).
                orgs.retain(|_, s| std::sync::Arc::strong_count(s) > 1);
            }
            let cap = self.cap.load(std::sync::atomic::Ordering::Relaxed) as usize;
            orgs.entry(org).or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(cap))).clone()
        };
        sem.acquire_owned().await.ok()
    }
}

impl DbState {
    fn check_grant(&mut self, table: &str, need: Access) -> Result<(), DbError> {
        match self.grants.tables.get(table) {
            Some(have) if *have >= need => Ok(()),
            _ => {
                let access = if need == Access::Write { "write" } else { "read" };
                self.refused = Some(format!("table {} ({access})", crate::plugin::failures::bound(table)));
                Err(DbError::NotGranted(table.to_string()))
            }
        }
    }

    /// Points a query at the physical table its (granted) name stands for: a plugin-owned
    /// table's short or `owner.table` name (`Grants::physical`); other names are physical.
    /// Returns the name the plugin used, to put back in errors.
    fn resolve(&self, table: &mut String) -> Option<(String, String)> {
        let physical = self.grants.physical.get(table.as_str())?.clone();
        let used = std::mem::replace(table, physical.clone());
        Some((physical, used))
    }

    async fn run(&mut self, st: Result<sql::Statement, DbError>) -> Result<Rows, DbError> {
        let st = st?;
        let tx = self.transaction().await?;
        match sql::run(tx, st).await {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// The invocation's transaction, opened on first use.
    async fn transaction(&mut self) -> Result<&mut crate::db::TenantTx, DbError> {
        if self.aborted {
            return Err(DbError::Aborted);
        }
        self.statements += 1;
        if self.statements > MAX_STATEMENTS {
            self.aborted = true;
            return Err(DbError::Invalid(format!("more than {MAX_STATEMENTS} statements in one invocation")));
        }
        if self.tx.is_none() {
            if self.slot.is_none() {
                self.slot = Some(self.slots.acquire(self.tenant).await.ok_or(DbError::Unavailable)?);
            }
            // Idle (the guest is not in a database call) for longer than one outbound call or
            // one statement may take, plus a second: the database ends the transaction.
            let g = &self.grants;
            let idle_ms = (g.http_timeout.as_millis() as u64).max(g.db_statement_timeout_ms) + 1_000;
            let tx = crate::db::begin_tenant_limited(&self.pool, self.tenant, self.actor, g.db_statement_timeout_ms, idle_ms)
                .await
                .map_err(|e| match e {
                    crate::Error::Db(d) => sql::classify(&d),
                    _ => DbError::Unavailable,
                })?;
            self.tx = Some(tx);
        }
        Ok(self.tx.as_mut().expect("opened above"))
    }

    fn failed(&mut self, e: &sqlx::Error) -> DbError {
        self.aborted = true;
        let mapped = sql::classify(e);
        if let DbError::UniqueViolation(name) | DbError::ConstraintViolation(name) = &mapped {
            // Unreachable while `db::structured` refuses writes to database-assigned columns;
            // kept so that a constraint spanning tenants is never named to a plugin.
            if self.schema.global_constraints.contains(name) {
                tracing::warn!(org_id = %self.tenant, constraint = %name, "plugin statement hit a constraint spanning tenants");
                return DbError::Invalid("rejected by the database".into());
            }
        }
        if matches!(mapped, DbError::Invalid(_)) || crate::error::is_data_exception(e) {
            // SQLSTATE only: PostgreSQL's message quotes the offending value, which may be an
            // email or a phone number from the tenant's data.
            let code = match e {
                sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
                _ => String::new(),
            };
            tracing::warn!(org_id = %self.tenant, sqlstate = %code, "plugin statement rejected by the database");
        }
        mapped
    }
}

impl DbState {
    async fn select_inner(&mut self, q: SelectQuery) -> Result<Rows, DbError> {
        let need = if q.for_update { Access::Write } else { Access::Read };
        self.check_grant(&q.table, need)?;
        let mut q = q;
        let alias = self.resolve(&mut q.table);
        let cap = self.grants.db_max_rows;
        let rows = self.run(sql::select(&self.schema, self.tenant, &q, cap)).await.map_err(|e| renamed(e, &alias))?;
        if rows.rows.len() > cap as usize {
            return Err(DbError::TooManyRows(cap));
        }
        Ok(rows)
    }

    async fn insert_inner(&mut self, q: InsertQuery) -> Result<Rows, DbError> {
        self.check_grant(&q.table, Access::Write)?;
        if q.rows.len() > self.grants.db_max_rows as usize {
            return Err(DbError::TooManyRows(self.grants.db_max_rows));
        }
        let mut q = q;
        let alias = self.resolve(&mut q.table);
        let st = sql::insert(&self.schema, self.tenant, &q);
        self.run(st).await.map_err(|e| renamed(e, &alias))
    }

    async fn update_inner(&mut self, q: UpdateQuery) -> Result<Rows, DbError> {
        self.check_grant(&q.table, Access::Write)?;
        let mut q = q;
        let alias = self.resolve(&mut q.table);
        let st = sql::update(&self.schema, self.tenant, &q);
        self.capped(st).await.map_err(|e| renamed(e, &alias))
    }

    async fn delete_inner(&mut self, q: DeleteQuery) -> Result<Rows, DbError> {
        self.check_grant(&q.table, Access::Write)?;
        let mut q = q;
        let alias = self.resolve(&mut q.table);
        let st = sql::delete(&self.schema, self.tenant, &q);
        self.capped(st).await.map_err(|e| renamed(e, &alias))
    }

    fn lock_allowed(&mut self, key: &str) -> Result<(), DbError> {
        if !self.grants.locks {
            self.refused = Some("locks".into());
            return Err(DbError::NotGranted("locks".into()));
        }
        if key.is_empty() || key.len() > 512 {
            return Err(DbError::Invalid("lock key must be 1 to 512 bytes".into()));
        }
        Ok(())
    }

    /// Builds one statement of a batch after its grant check, exactly as the single call
    /// would (same checks, same SQL), its values going to the batch's array.
    fn batch_statement(&mut self, st: Statement, values: &mut sql::BatchValues) -> Result<Built, DbError> {
        let cap = self.grants.db_max_rows;
        let (built, alias, capped) = match st {
            Statement::Select(mut q) => {
                self.check_grant(&q.table, if q.for_update { Access::Write } else { Access::Read })?;
                let alias = self.resolve(&mut q.table);
                (sql::select_in(&self.schema, self.tenant, &q, cap, Some(values)), alias, Capped::Rows)
            }
            Statement::Insert(mut q) => {
                self.check_grant(&q.table, Access::Write)?;
                if q.rows.len() > cap as usize {
                    return Err(DbError::TooManyRows(cap));
                }
                let alias = self.resolve(&mut q.table);
                (sql::insert_in(&self.schema, self.tenant, &q, Some(values)), alias, Capped::No)
            }
            Statement::Update(mut q) => {
                self.check_grant(&q.table, Access::Write)?;
                let alias = self.resolve(&mut q.table);
                (sql::update_in(&self.schema, self.tenant, &q, Some(values)), alias, Capped::Changes)
            }
            Statement::Delete(mut q) => {
                self.check_grant(&q.table, Access::Write)?;
                let alias = self.resolve(&mut q.table);
                (sql::delete_in(&self.schema, self.tenant, &q, Some(values)), alias, Capped::Changes)
            }
            Statement::Lock(key) => return self.batch_lock(&key, true, values),
            Statement::TryLock(key) => return self.batch_lock(&key, false, values),
        };
        let built = built.map_err(|e| renamed(e, &alias))?;
        Ok(Built { text: sql::batch_sql(&built), returns: built.returns, alias, capped })
    }

    fn batch_lock(&mut self, key: &str, wait: bool, values: &mut sql::BatchValues) -> Result<Built, DbError> {
        self.lock_allowed(key)?;
        let (text, returns) = sql::batch_lock_sql(key, wait, values);
        Ok(Built { text, returns, alias: None, capped: Capped::No })
    }

    async fn batch_inner(&mut self, statements: Vec<Statement>) -> Result<Vec<Rows>, BatchError> {
        let at = |index: usize, error: DbError| BatchError { index: index as u32, error };
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        if statements.len() > MAX_BATCH {
            return Err(at(MAX_BATCH, DbError::Invalid(format!("more than {MAX_BATCH} statements in one batch"))));
        }
        // Everything is checked and built before anything is sent: a refused statement leaves
        // the transaction as it was.
        let last = statements.len() - 1;
        let mut values = sql::BatchValues::default();
        let mut texts = Vec::with_capacity(statements.len());
        let mut built = Vec::with_capacity(statements.len());
        for (i, st) in statements.into_iter().enumerate() {
            let b = self.batch_statement(st, &mut values).map_err(|e| at(i, e))?;
            values.returns.push(b.returns);
            texts.push(b.text);
            built.push((b.alias, b.capped));
        }
        // The batch counts as its statements towards the invocation's limit.
        self.statements += last as u32;
        let tx = self.transaction().await.map_err(|e| at(0, e))?;
        let results = match sql::run_batch(tx, texts, values).await {
            Ok(r) => r,
            Err((index, e)) => {
                let index = index.unwrap_or(last).min(last);
                let mapped = renamed(self.failed(&e), &built[index].0);
                return Err(at(index, mapped));
            }
        };
        // Caps, as the single calls apply them; the statements after the one over its cap
        // have run, so the transaction cannot commit.
        let cap = self.grants.db_max_rows;
        for (i, ((_, capped), rows)) in built.iter().zip(&results).enumerate() {
            let over = match capped {
                Capped::Rows => rows.rows.len() > cap as usize,
                Capped::Changes => rows.affected > u64::from(cap) || rows.rows.len() > cap as usize,
                Capped::No => false,
            };
            if over {
                self.aborted = true;
                return Err(at(i, DbError::TooManyRows(cap)));
            }
        }
        Ok(results)
    }

    async fn try_lock_inner(&mut self, key: String) -> Result<bool, DbError> {
        self.lock_allowed(&key)?;
        let tx = self.transaction().await?;
        match sql::try_lock(tx, &key).await {
            Ok(got) => Ok(got),
            Err(e) => Err(self.failed(&e)),
        }
    }

    async fn lock_inner(&mut self, key: String) -> Result<(), DbError> {
        self.lock_allowed(&key)?;
        let tx = self.transaction().await?;
        match sql::lock(tx, &key).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(&e)),
        }
    }
}

/// An error about a plugin-owned table, in the name the plugin used for it (its physical
/// name is the host's business).
fn renamed(e: DbError, alias: &Option<(String, String)>) -> DbError {
    let Some((physical, used)) = alias else { return e };
    let fix = |s: String| s.replace(physical.as_str(), used);
    match e {
        DbError::UnknownTable(s) => DbError::UnknownTable(fix(s)),
        DbError::UnknownColumn(s) => DbError::UnknownColumn(fix(s)),
        DbError::Invalid(s) => DbError::Invalid(fix(s)),
        DbError::UniqueViolation(s) => DbError::UniqueViolation(fix(s)),
        DbError::ConstraintViolation(s) => DbError::ConstraintViolation(fix(s)),
        other => other,
    }
}

impl DbState {
    /// Update/delete cannot be limited in SQL: more rows changed than the cap (returned or
    /// not) aborts the invocation, so `db_max_rows` bounds what one call can change and a
    /// plugin never commits work it could not see.
    async fn capped(&mut self, st: Result<sql::Statement, DbError>) -> Result<Rows, DbError> {
        let cap = self.grants.db_max_rows;
        let rows = self.run(st).await?;
        if rows.affected > u64::from(cap) || rows.rows.len() > cap as usize {
            self.aborted = true;
            return Err(DbError::TooManyRows(cap));
        }
        Ok(rows)
    }
}

/// Waiting on the database is not CPU: `plugin::cpu` charges only the polls that run.
impl Host for DbState {
    async fn select(&mut self, q: SelectQuery) -> Result<Rows, DbError> {
        self.select_inner(q).await
    }
    async fn insert(&mut self, q: InsertQuery) -> Result<Rows, DbError> {
        self.insert_inner(q).await
    }
    async fn update(&mut self, q: UpdateQuery) -> Result<Rows, DbError> {
        self.update_inner(q).await
    }
    async fn delete(&mut self, q: DeleteQuery) -> Result<Rows, DbError> {
        self.delete_inner(q).await
    }
    async fn lock(&mut self, key: String) -> Result<(), DbError> {
        self.lock_inner(key).await
    }
    async fn try_lock(&mut self, key: String) -> Result<bool, DbError> {
        self.try_lock_inner(key).await
    }
    async fn batch(&mut self, statements: Vec<Statement>) -> Result<Vec<Rows>, BatchError> {
        self.batch_inner(statements).await
    }
}
