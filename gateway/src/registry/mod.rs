//! The plugin registry: operators upload component versions, activate one, roll back; every
//! replica keeps its loaded plugins in step with the database.
//!
//! A swap builds the new `InstancePre` first and then replaces the route table's entry in one
//! pointer store: requests that started on the old version finish on it (they hold its
//! `Arc`), new requests get the new one. Other replicas hear of it through
//! `NOTIFY gateway_plugins` and a periodic re-check.

pub mod fixtures;
pub mod manifest;
pub mod needs;
pub mod storage;

use std::sync::Arc;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::error::{ApiError, Code};
use crate::plugin::{LoadedPlugin, Runtime, WIT_VERSIONS};
use crate::policy::PolicySet;
use crate::state::AppState;

/// Names as in policies: lower-case letters, digits and `-`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("name", "must be 1 to 64 of [a-z0-9-]"))
    }
}

async fn compile(runtime: &Arc<Runtime>, name: &str, version: &str, bytes: Vec<u8>) -> crate::Result<LoadedPlugin> {
    let (rt, name, version) = (runtime.clone(), name.to_string(), version.to_string());
    tokio::task::spawn_blocking(move || rt.load(&name, &version, &bytes))
        .await
        .map_err(|e| crate::Error::Plugin { plugin: "-".into(), reason: e.to_string() })?
}

pub struct Uploaded {
    pub name: String,
    pub version: i32,
    pub sha256: String,
}

/// Keeps an accepted plugin's compiled code (`Runtime::keep`), off the async workers: it may
/// write the on-disk cache.
async fn keep(runtime: &Arc<Runtime>, loaded: Arc<LoadedPlugin>) {
    let rt = runtime.clone();
    let _ = tokio::task::spawn_blocking(move || rt.keep(&loaded)).await;
}

/// Validates (a component of a served `handler` world, within the resource budget, importing
/// nothing plugins may not use, that compiles, whose shipped contract fixtures pass within
/// their time budget) and stores a new version. Nothing is stored when it is refused: no
/// version, no compiled code.
pub async fn upload(pool: &PgPool, runtime: &Arc<Runtime>, name: &str, bytes: Vec<u8>, actor: Option<Uuid>) -> Result<Uploaded, ApiError> {
    check_name(name)?;
    if bytes.is_empty() {
        return Err(ApiError::new(Code::PluginRejected, "empty body: send the component bytes"));
    }
    let reject = |what: &str, reason: String| {
        tracing::warn!(plugin = name, reason = %reason, "plugin_rejected");
        ApiError::new(Code::PluginRejected, format!("{what}: {reason}"))
    };
    let loaded = compile(runtime, name, "candidate", bytes.clone()).await.map_err(|e| reject("component rejected", e.to_string()))?;
    let loaded = Arc::new(loaded);
    // Fixtures the plugin ships must pass before anything is stored (no grants: they cannot
    // reach the database or the network).
    let fixtures = fixtures::extract(&bytes).map_err(|e| reject("component rejected", e.to_string()))?;
    if let Some(fixtures) = fixtures {
        let started = std::time::Instant::now();
        let passed = fixtures::run(runtime.clone(), loaded.clone(), pool.clone(), fixtures)
            .await
            .map_err(|reason| {
                tracing::warn!(plugin = name, reason = %reason, elapsed_ms = started.elapsed().as_millis() as u64, "plugin_rejected");
                ApiError::new(Code::PluginRejected, format!("contract fixture failed: {reason}"))
            })?;
        tracing::info!(plugin = name, fixtures = passed, elapsed_ms = started.elapsed().as_millis() as u64, "plugin_fixtures_passed");
    }
    let manifest = manifest::Manifest::from_component(&bytes).map_err(|e| reject("component rejected", e.to_string()))?;
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    if let Some(m) = &manifest {
        check_manifest(&mut tx, name, m).await.map_err(|reason| reject("manifest rejected", reason))?;
    }
    let version = db::plugins::insert_version(&mut *tx, name, &loaded.sha256, &bytes, WIT_VERSIONS[0], actor).await?;
    if let Some(m) = &manifest {
        let json = serde_json::to_value(m).map_err(|e| crate::Error::Plugin { plugin: name.into(), reason: e.to_string() })?;
        db::plugin_storage::set_manifest(&mut *tx, name, version, &json).await?;
    }
    db::plugins::audit(&mut *tx, actor, "upload", name, None, Some(version)).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, version, sha256 = %loaded.sha256, actor = ?actor, "plugin_uploaded");
    keep(runtime, loaded.clone()).await;
    Ok(Uploaded { name: name.to_string(), version, sha256: loaded.sha256.clone() })
}

/// A manifest on its own terms and against the plugin's earlier versions (upload, under the
/// name's lock): the name it gives, owned tables' names, and storage that only grows.
async fn check_manifest(tx: &mut sqlx::PgConnection, name: &str, m: &manifest::Manifest) -> Result<(), String> {
    if let Some(n) = m.plugin.name.as_deref().filter(|n| *n != name) {
        return Err(format!("plugin.name is {n:?}, but the version is uploaded as {name:?}"));
    }
    let unavailable = |_| "the registry could not read the earlier versions".to_string();
    for t in &m.storage {
        // A short name that is also a gateway table would make a grant of it ambiguous.
        if db::plugin_storage::table_exists(&mut *tx, &t.name).await.map_err(unavailable)? {
            return Err(format!("storage table `{}`: a gateway table has that name", t.name));
        }
    }
    let mut before = storage::Declared::default();
    for (_, json) in db::plugin_storage::manifests(&mut *tx, name).await.map_err(unavailable)? {
        if let Ok(old) = serde_json::from_value::<manifest::Manifest>(json) {
            before.add(&old.storage);
        }
    }
    storage::check(name, &m.storage, &before)
}

/// The manifest stored with a version, if it shipped one.
async fn stored_manifest(tx: &mut sqlx::PgConnection, name: &str, version: i32) -> Result<Option<manifest::Manifest>, ApiError> {
    let Some(json) = db::plugin_storage::manifest(&mut *tx, name, version).await? else { return Ok(None) };
    serde_json::from_value(json).map(Some).map_err(|e| {
        tracing::error!(plugin = name, version, error = %e, "stored plugin manifest unreadable");
        ApiError::new(Code::Internal, "internal error")
    })
}

/// Makes `version` the active one; returns `(from, to)`. A version with a manifest must have
/// its needs covered by every route of `policies` that serves it (else 422
/// `PLUGIN_GRANTS_MISSING` naming each missing grant, and nothing changes), and its owned
/// tables are created or brought forward in the same transaction as the switch.
pub async fn activate(pool: &PgPool, policies: &PolicySet, name: &str, version: i32, actor: Option<Uuid>) -> Result<(Option<i32>, i32), ApiError> {
    check_name(name)?;
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    if db::plugins::version(&mut *tx, name, version).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let current = db::plugins::active(&mut *tx, name).await?.map(|(v, _)| v);
    if current == Some(version) {
        return Ok((current, version));
    }
    if let Some(m) = stored_manifest(&mut tx, name, version).await? {
        let missing = needs::missing(name, &m.needs, policies);
        if !missing.is_empty() {
            tracing::warn!(plugin = name, version, missing = missing.len(), "plugin_grants_missing");
            return Err(ApiError::new(Code::PluginGrantsMissing, format!("{name} version {version} needs grants its routes do not give"))
                .with_field("missing", json!(missing)));
        }
        for t in &m.storage {
            if let Err(reason) = db::plugin_storage::create_owned(&mut tx, name, t).await? {
                tracing::warn!(plugin = name, version, reason = %reason, "plugin_storage_refused");
                return Err(ApiError::new(Code::PluginRejected, reason));
            }
        }
        if !m.storage.is_empty() {
            tracing::info!(plugin = name, version, tables = m.storage.len(), "plugin_storage_ready");
        }
    }
    db::plugins::set_active(&mut *tx, name, version, current, actor).await?;
    db::plugins::audit(&mut *tx, actor, "activate", name, current, Some(version)).await?;
    db::plugins::notify(&mut *tx, name).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, from = ?current, to = version, actor = ?actor, "plugin_activated");
    Ok((current, version))
}

/// Goes back to the previously active version; returns `(from, to)`.
pub async fn rollback(pool: &PgPool, name: &str, actor: Option<Uuid>) -> Result<(i32, i32), ApiError> {
    check_name(name)?;
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    let (current, previous) = db::plugins::active(&mut *tx, name).await?.ok_or_else(ApiError::not_found)?;
    let previous = previous.ok_or_else(|| ApiError::new(Code::Conflict, "no previously active version to roll back to"))?;
    db::plugins::set_active(&mut *tx, name, previous, Some(current), actor).await?;
    db::plugins::audit(&mut *tx, actor, "rollback", name, Some(current), Some(previous)).await?;
    db::plugins::notify(&mut *tx, name).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, from = current, to = previous, actor = ?actor, "plugin_rolled_back");
    Ok((current, previous))
}

pub async fn list(pool: &PgPool) -> Result<serde_json::Value, ApiError> {
    let rows = db::plugins::list(pool).await?;
    let mut manifests = db::plugin_storage::all_manifests(pool).await?;
    Ok(json!({ "plugins": rows.iter().map(|r| {
        let mut v = json!({
            "name": r.name, "version": r.version, "sha256": r.sha256, "wit_world": r.wit_world,
            "uploaded_by": r.uploaded_by, "uploaded_at": r.uploaded_at, "active": r.active,
        });
        if let Some(m) = manifests.remove(&(r.name.clone(), r.version)) {
            v["needs"] = m.get("needs").cloned().unwrap_or_default();
            v["storage"] = json!(m.get("storage").and_then(|s| s.as_array()).map(|a| a.iter().filter_map(|t| t.get("name").cloned()).collect::<Vec<_>>()).unwrap_or_default());
        }
        v
    }).collect::<Vec<_>>() }))
}

/// Brings this replica's loaded plugins in line with the active versions in the database
/// (all of them, or one name). Compiles before swapping; a version that fails to load keeps
/// the running one and is logged.
pub async fn sync(state: &AppState, only: Option<&str>) -> crate::Result<()> {
    // One sync at a time, each reading the database afresh under the lock: a slow sync that
    // read an older activation can never swap in after a newer one.
    let _serial = state.plugin_sync.lock().await;
    let mut swapped = false;
    for (name, version, sha) in db::plugins::all_active(&state.pool).await? {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let label = version.to_string();
        if state.plugin(&name).is_some_and(|p| p.sha256 == sha && p.version == label) {
            continue;
        }
        let Some((_, bytes)) = db::plugins::version(&state.pool, &name, version).await? else { continue };
        match compile(&state.runtime, &name, &label, bytes).await {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                keep(&state.runtime, loaded.clone()).await;
                if !swapped {
                    // An activation may have created owned tables: the schema the new version
                    // runs against is read before it serves.
                    swapped = true;
                    refresh_schema(state).await?;
                }
                state.set_plugin(&name, loaded);
                tracing::info!(plugin = %name, version, "plugin_swapped");
                state.metrics.plugin_activation(&name, "swapped");
            }
            Err(e) => {
                tracing::error!(plugin = %name, version, error = %e, "plugin_swap_failed");
                state.metrics.plugin_activation(&name, "failed");
            }
        }
    }
    Ok(())
}

/// Reads the live schema again (plugin-owned tables appear when a version declaring them is
/// activated, on whichever replica).
async fn refresh_schema(state: &AppState) -> crate::Result<()> {
    let schema = db::structured::Schema::load(&state.pool).await?;
    state.set_schema(schema);
    Ok(())
}
