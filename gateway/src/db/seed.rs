//! Rows a contract fixture seeds into a throwaway database before it runs (`gateway plugin
//! check`, `registry::fixtures`). Never used against a gateway's own database.
//!
//! Identifiers come from the live schema only (a table or column the schema does not know is
//! refused, naming it); values are bound as one JSON document that PostgreSQL converts to the
//! columns' types (`json_populate_record`), so a fixture writes rows the way an author would
//! read them. `tenant_id` is always the transaction's org. Unlike a plugin's insert, a seed
//! may set database-assigned columns (`id`): fixtures need known ids to ask for.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::structured::Schema;
use super::TenantTx;
use crate::error::{Error, Result};

/// Quotes an identifier already checked against the schema.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Inserts `row` into `table` in `tx`'s org.
pub async fn insert_row(tx: &mut TenantTx, schema: &Schema, table: &str, row: &Map<String, Value>) -> Result<()> {
    let bad = |what: String| Error::Config(format!("seed: {what}"));
    let columns = schema.tables.get(table).ok_or_else(|| bad(format!("no tenant table `{table}`")))?;
    let mut names = Vec::with_capacity(row.len());
    for name in row.keys() {
        if name == "tenant_id" {
            return Err(bad(format!("`{table}.tenant_id` is set by the gateway (the fixture's org)")));
        }
        if !columns.contains_key(name) {
            return Err(bad(format!("table `{table}` has no column `{name}`")));
        }
        names.push(ident(name));
    }
    let list = names.join(", ");
    let sql = if names.is_empty() {
        format!("INSERT INTO {t} (tenant_id) VALUES ($1)", t = ident(table))
    } else {
        format!(
            "INSERT INTO {t} (tenant_id, {list}) SELECT $1, {list} FROM json_populate_record(NULL::{t}, $2::json)",
            t = ident(table)
        )
    };
    let org: Uuid = tx.org();
    sqlx::query(&sql)
        .bind(org)
        .bind(Value::Object(row.clone()))
        .execute(tx.conn())
        .await
        .map_err(|e| bad(format!("a row of `{table}` was refused: {}", describe(&e))))?;
    Ok(())
}

/// The database's reason, without SQL text.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        other => other.to_string(),
    }
}

/// Creates the org a fixture runs in (a platform row), if it does not exist yet.
pub async fn ensure_org<'e>(exec: impl sqlx::PgExecutor<'e>, org: Uuid, name: &str) -> Result<()> {
    sqlx::query("INSERT INTO orgs (id, name, plan) VALUES ($1, $2, 'fixture') ON CONFLICT (id) DO NOTHING")
        .bind(org)
        .bind(name)
        .execute(exec)
        .await?;
    Ok(())
}

/// Removes a fixture's org and (by cascade) every row of it.
pub async fn remove_org<'e>(exec: impl sqlx::PgExecutor<'e>, org: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM orgs WHERE id = $1").bind(org).execute(exec).await?;
    Ok(())
}
