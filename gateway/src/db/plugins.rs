//! The plugin registry tables (platform tables: `plugin_versions`, `plugin_active`,
//! `plugin_audit`).

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::Result;

/// Serialises uploads and activations of one plugin name.
pub async fn lock_name<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('plugin:' || $1, 0))").bind(name).execute(exec).await?;
    Ok(())
}

/// Stores a new version (the next number for this name) and returns it.
pub async fn insert_version<'e>(
    exec: impl PgExecutor<'e>,
    name: &str,
    sha256: &str,
    component: &[u8],
    world: &str,
    actor: Option<Uuid>,
) -> Result<i32> {
    Ok(sqlx::query_scalar(
        "INSERT INTO plugin_versions (name, version, sha256, component, wit_world, uploaded_by) \
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5 FROM plugin_versions WHERE name = $1 \
         RETURNING version",
    )
    .bind(name)
    .bind(sha256)
    .bind(component)
    .bind(world)
    .bind(actor)
    .fetch_one(exec)
    .await?)
}

/// A stored version's digest and bytes.
pub async fn version<'e>(exec: impl PgExecutor<'e>, name: &str, version: i32) -> Result<Option<(String, Vec<u8>)>> {
    Ok(sqlx::query_as("SELECT sha256, component FROM plugin_versions WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(exec)
        .await?)
}

/// The WIT package a stored version was built against (`gateway:plugin@0.2.0`); `None`: no
/// such version.
pub async fn wit<'e>(exec: impl PgExecutor<'e>, name: &str, version: i32) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT wit_world FROM plugin_versions WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(exec)
        .await?)
}

/// `(version, previous_version)` of the active version, if any.
pub async fn active<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<Option<(i32, Option<i32>)>> {
    Ok(sqlx::query_as("SELECT version, previous_version FROM plugin_active WHERE name = $1")
        .bind(name)
        .fetch_optional(exec)
        .await?)
}

pub async fn set_active<'e>(
    exec: impl PgExecutor<'e>,
    name: &str,
    version: i32,
    previous: Option<i32>,
    actor: Option<Uuid>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugin_active (name, version, previous_version, activated_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, previous_version = EXCLUDED.previous_version, \
           activated_by = EXCLUDED.activated_by, activated_at = now()",
    )
    .bind(name)
    .bind(version)
    .bind(previous)
    .bind(actor)
    .execute(exec)
    .await?;
    Ok(())
}

pub async fn audit<'e>(
    exec: impl PgExecutor<'e>,
    actor: Option<Uuid>,
    action: &str,
    name: &str,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<()> {
    sqlx::query("INSERT INTO plugin_audit (actor, action, name, from_version, to_version) VALUES ($1, $2, $3, $4, $5)")
        .bind(actor)
        .bind(action)
        .bind(name)
        .bind(from)
        .bind(to)
        .execute(exec)
        .await?;
    Ok(())
}

/// Every active `(name, version, sha256)`.
pub async fn all_active<'e>(exec: impl PgExecutor<'e>) -> Result<Vec<(String, i32, String)>> {
    Ok(sqlx::query_as(
        "SELECT a.name, a.version, v.sha256 FROM plugin_active a \
         JOIN plugin_versions v ON v.name = a.name AND v.version = a.version ORDER BY a.name",
    )
    .fetch_all(exec)
    .await?)
}

#[derive(Debug, sqlx::FromRow)]
pub struct VersionRow {
    pub name: String,
    pub version: i32,
    pub sha256: String,
    /// The WIT package the component was built against (`gateway:plugin@0.1.0`), from its
    /// handler export at upload.
    pub wit_world: String,
    pub uploaded_by: Option<Uuid>,
    pub uploaded_at: chrono::DateTime<chrono::Utc>,
    pub active: bool,
}

pub async fn list<'e>(exec: impl PgExecutor<'e>) -> Result<Vec<VersionRow>> {
    Ok(sqlx::query_as(
        "SELECT v.name, v.version, v.sha256, v.wit_world, v.uploaded_by, v.uploaded_at, \
                (a.version IS NOT NULL) AS active \
         FROM plugin_versions v LEFT JOIN plugin_active a ON a.name = v.name AND a.version = v.version \
         ORDER BY v.name, v.version",
    )
    .fetch_all(exec)
    .await?)
}

/// Tells every replica that `name`'s active version changed.
pub async fn notify<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(PLUGINS_CHANNEL).bind(name).execute(exec).await?;
    Ok(())
}

pub const PLUGINS_CHANNEL: &str = "gateway_plugins";

/// Records the author's semver label of a stored version.
pub async fn set_label<'e>(exec: impl PgExecutor<'e>, name: &str, version: i32, label: &str) -> Result<()> {
    sqlx::query("UPDATE plugin_versions SET label = $3 WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .bind(label)
        .execute(exec)
        .await?;
    Ok(())
}

/// Every active `(name, version, sha256, label)`.
pub async fn all_active_labeled<'e>(exec: impl PgExecutor<'e>) -> Result<Vec<(String, i32, String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT a.name, a.version, v.sha256, v.label FROM plugin_active a \
         JOIN plugin_versions v ON v.name = a.name AND v.version = a.version ORDER BY a.name",
    )
    .fetch_all(exec)
    .await?)
}

/// `(version, label)` of every stored version, for `list`.
pub async fn labels<'e>(exec: impl PgExecutor<'e>) -> Result<Vec<(String, i32, Option<String>)>> {
    Ok(sqlx::query_as("SELECT name, version, label FROM plugin_versions ORDER BY name, version").fetch_all(exec).await?)
}

/// Appends an activation (`None`: deactivated) to the history.
pub async fn push_activation<'e>(exec: impl PgExecutor<'e>, name: &str, version: Option<i32>, actor: Option<Uuid>) -> Result<()> {
    sqlx::query("INSERT INTO plugin_activations (name, version, actor) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(version)
        .bind(actor)
        .execute(exec)
        .await?;
    Ok(())
}

/// The two newest activations not undone, newest first: `(id, version)`.
pub async fn live_activations<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<Vec<(i64, Option<i32>)>> {
    Ok(sqlx::query_as(
        "SELECT id, version FROM plugin_activations WHERE name = $1 AND undone_at IS NULL ORDER BY id DESC LIMIT 2",
    )
    .bind(name)
    .fetch_all(exec)
    .await?)
}

pub async fn undo_activation<'e>(exec: impl PgExecutor<'e>, id: i64) -> Result<()> {
    sqlx::query("UPDATE plugin_activations SET undone_at = now() WHERE id = $1").bind(id).execute(exec).await?;
    Ok(())
}

/// No active registry version: the policy's file serves.
pub async fn clear_active<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM plugin_active WHERE name = $1").bind(name).execute(exec).await?;
    Ok(())
}
