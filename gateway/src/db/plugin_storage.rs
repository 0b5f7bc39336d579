//! Plugin manifests as stored with their versions, and plugin-owned tables
//! (`docs/plugin-manifest.md`): their physical names and their DDL, run as the owner role in
//! the activation's transaction.
//!
//! A plugin-owned table is `public.plg_<plugin>__<table>` (a `-` in the plugin name becomes
//! `_`; plugin names have no `_` and table names no `__`, so the name maps back to exactly one
//! plugin and table). It is a tenant table like the gateway's own: `app_tenant_table` (0002)
//! enables and forces row-level security, adds the one tenant policy and grants `gateway_app`
//! its privileges; `db::structured::Schema` sees it like any tenant table.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};

use crate::error::Result;
use crate::registry::manifest::{Column, ColumnType, OwnedTable};

/// The prefix of every plugin-owned table; no gateway table starts with it.
pub const PREFIX: &str = "plg_";

/// PostgreSQL's identifier limit, in bytes.
pub const MAX_IDENTIFIER: usize = 63;

/// The physical table of `plugin`'s table `table`.
pub fn physical(plugin: &str, table: &str) -> String {
    format!("{PREFIX}{}__{table}", plugin.replace('-', "_"))
}

/// `(plugin, table)` of a physical plugin-owned table name.
pub fn split_physical(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (plugin, table) = rest.rsplit_once("__")?;
    if plugin.is_empty() || table.is_empty() {
        return None;
    }
    Some((plugin.replace('_', "-"), table.to_string()))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn sql_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::Bigint => "bigint",
        ColumnType::Boolean => "boolean",
        ColumnType::Numeric => "numeric",
        ColumnType::Timestamptz => "timestamptz",
        ColumnType::Uuid => "uuid",
        ColumnType::Jsonb => "jsonb",
    }
}

/// A column's `default` as an SQL constant of its type. DDL cannot bind parameters, so the
/// value is written as a literal: strings quoted (standard-conforming, `'` doubled), numbers
/// and booleans as such; anything else, or a value of the wrong kind for the type, is refused.
pub fn default_literal(c: &Column) -> std::result::Result<Option<String>, String> {
    let Some(v) = &c.default else { return Ok(None) };
    let ty = sql_type(c.ty);
    let lit = match (v, c.ty) {
        (toml::Value::String(s), ColumnType::Text | ColumnType::Uuid | ColumnType::Timestamptz | ColumnType::Jsonb | ColumnType::Numeric) => {
            if s.contains('\0') {
                return Err(format!("column `{}`: default contains NUL", c.name));
            }
            format!("'{}'", s.replace('\'', "''"))
        }
        (toml::Value::Datetime(d), ColumnType::Timestamptz) => format!("'{d}'"),
        (toml::Value::Integer(i), ColumnType::Integer | ColumnType::Bigint | ColumnType::Numeric) => i.to_string(),
        (toml::Value::Float(f), ColumnType::Numeric) if f.is_finite() => format!("{f:?}"),
        (toml::Value::Boolean(b), ColumnType::Boolean) => b.to_string(),
        _ => return Err(format!("column `{}`: default {v} is not a constant of type {ty}", c.name)),
    };
    Ok(Some(format!("{lit}::{ty}")))
}

fn column_sql(c: &Column) -> std::result::Result<String, String> {
    let mut s = format!("{} {}", quote(&c.name), sql_type(c.ty));
    if !c.nullable {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = default_literal(c)? {
        s.push_str(" DEFAULT ");
        s.push_str(&d);
    }
    Ok(s)
}

/// The name of a unique or plain index of an owned table: its table, kind and columns
/// digested (index names share one namespace, and a readable one would not fit 63 bytes).
fn index_name(physical: &str, unique: bool, columns: &[String]) -> String {
    use sha2::Digest;
    let key = format!("{physical}|{unique}|{}", columns.join(","));
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{}_{hex}", if unique { "u" } else { "i" })
}

/// Creates `plugin`'s table `t`, or brings an existing one forward (adds the declared columns
/// and indexes it lacks; never drops or alters anything), as the connection's (owner) role.
/// Runs in the caller's transaction: all of an activation's tables, or none. The inner `Err`
/// is the declaration's fault (a default its type refuses, a new unique the rows break),
/// naming the table; the outer one the database's.
pub async fn create_owned(conn: &mut PgConnection, plugin: &str, t: &OwnedTable) -> Result<std::result::Result<(), String>> {
    let decl = |reason: String| format!("storage table `{}`: {reason}", t.name);
    let phys = physical(plugin, &t.name);
    let qualified = format!("public.{}", quote(&phys));
    let columns: Vec<String> = match t.columns.iter().map(column_sql).collect::<std::result::Result<_, _>>() {
        Ok(c) => c,
        Err(reason) => return Ok(Err(decl(reason))),
    };
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&qualified).fetch_one(&mut *conn).await?;
    let mut statements = Vec::new();
    if !exists {
        statements.push(format!(
            "CREATE TABLE {qualified} (\
               tenant_id uuid NOT NULL REFERENCES public.orgs (id) ON DELETE CASCADE, \
               id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY, \
               created_at timestamptz NOT NULL DEFAULT now(), {})",
            columns.join(", ")
        ));
        statements.push(format!("SELECT app_tenant_table('{}'::regclass)", qualified.replace('\'', "''")));
    } else {
        statements.extend(columns.iter().map(|c| format!("ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {c}")));
    }
    for (unique, sets) in [(true, &t.unique), (false, &t.indexes)] {
        for set in sets {
            let mut cols = vec![quote("tenant_id")];
            cols.extend(set.iter().map(|c| quote(c)));
            statements.push(format!(
                "CREATE {}INDEX IF NOT EXISTS {} ON {qualified} ({})",
                if unique { "UNIQUE " } else { "" },
                quote(&index_name(&phys, unique, set)),
                cols.join(", ")
            ));
        }
    }
    for st in statements {
        match sqlx::query(&st).execute(&mut *conn).await {
            Ok(_) => {}
            // 22xxx: a default the type refuses; 23505: a new unique the rows already break.
            Err(sqlx::Error::Database(d)) if d.code().is_some_and(|c| c.starts_with("22") || c == "23505") => {
                return Ok(Err(decl(format!("the database refused the declaration (SQLSTATE {})", d.code().unwrap_or_default()))));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Ok(()))
}

/// Whether a table of that name exists in the gateway's schema (a plugin's short table name
/// may not shadow one).
pub async fn table_exists<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(format!("public.{}", quote(name))).fetch_one(exec).await?)
}

pub async fn set_manifest<'e>(exec: impl PgExecutor<'e>, name: &str, version: i32, manifest: &Value) -> Result<()> {
    sqlx::query("UPDATE plugin_versions SET manifest = $3 WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .bind(manifest)
        .execute(exec)
        .await?;
    Ok(())
}

/// The manifest stored with one version (`None`: no such version, or none shipped).
pub async fn manifest<'e>(exec: impl PgExecutor<'e>, name: &str, version: i32) -> Result<Option<Value>> {
    let row: Option<(Option<Value>,)> = sqlx::query_as("SELECT manifest FROM plugin_versions WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(exec)
        .await?;
    Ok(row.and_then(|r| r.0))
}

/// The manifests of every stored version of `name`, oldest first.
pub async fn manifests<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<Vec<(i32, Value)>> {
    Ok(sqlx::query_as("SELECT version, manifest FROM plugin_versions WHERE name = $1 AND manifest IS NOT NULL ORDER BY version")
        .bind(name)
        .fetch_all(exec)
        .await?)
}

/// Every stored manifest, by `(name, version)` (for the registry's list).
pub async fn all_manifests<'e>(exec: impl PgExecutor<'e>) -> Result<HashMap<(String, i32), Value>> {
    let rows: Vec<(String, i32, Value)> =
        sqlx::query_as("SELECT name, version, manifest FROM plugin_versions WHERE manifest IS NOT NULL").fetch_all(exec).await?;
    Ok(rows.into_iter().map(|(n, v, m)| ((n, v), m)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_names_map_back_to_one_plugin_and_table() {
        for (plugin, table) in [("notes", "notes"), ("a-b", "t"), ("a--b", "x_y"), ("a-", "t1")] {
            let p = physical(plugin, table);
            assert_eq!(split_physical(&p), Some((plugin.to_string(), table.to_string())), "{p}");
        }
        assert_eq!(physical("my-notes", "items"), "plg_my_notes__items");
        assert_eq!(split_physical("crm_contacts"), None);
        assert_eq!(split_physical("plg_x"), None);
    }

    #[test]
    fn defaults_are_constants_of_their_type() {
        let col = |ty, v: toml::Value| Column { name: "c".into(), ty, nullable: false, default: Some(v) };
        assert_eq!(default_literal(&col(ColumnType::Text, "it's".into())).unwrap().unwrap(), "'it''s'::text");
        assert_eq!(default_literal(&col(ColumnType::Boolean, false.into())).unwrap().unwrap(), "false::boolean");
        assert_eq!(default_literal(&col(ColumnType::Bigint, 7.into())).unwrap().unwrap(), "7::bigint");
        assert!(default_literal(&col(ColumnType::Integer, "1; DROP TABLE x".into())).is_err());
        assert!(default_literal(&col(ColumnType::Boolean, 1.into())).is_err());
        assert!(default_literal(&col(ColumnType::Numeric, f64::NAN.into())).is_err());
    }
}
