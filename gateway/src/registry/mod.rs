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
use crate::plugin::{LoadedPlugin, Runtime};
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
    /// The author's semver label from the manifest, when the component carries one.
    pub label: Option<String>,
    /// The WIT package the component was built against (`gateway:plugin@0.2.0`).
    pub wit: &'static str,
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
    check_wasm(&bytes)?;
    let reject = |what: &str, reason: String| {
        tracing::warn!(plugin = name, reason = %reason, "plugin_rejected");
        ApiError::new(Code::PluginRejected, format!("{what}: {reason}"))
    };
    // Read once, before compiling: a bad manifest is refused cheaply, and the label and the
    // needs/storage checks below come from the same parse.
    let manifest = manifest::Manifest::from_component(&bytes).map_err(|e| reject("manifest rejected", e.0))?;
    let label = manifest.as_ref().map(|m| m.plugin.version.clone());
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
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    if let Some(m) = &manifest {
        check_manifest(&mut tx, name, m).await.map_err(|reason| reject("manifest rejected", reason))?;
    }
    // The contract the component was built against, as its handler export names it.
    let version = db::plugins::insert_version(&mut *tx, name, &loaded.sha256, &bytes, loaded.wit_version(), actor).await?;
    if let Some(m) = &manifest {
        let json = serde_json::to_value(m).map_err(|e| crate::Error::Plugin { plugin: name.into(), reason: e.to_string() })?;
        db::plugin_storage::set_manifest(&mut *tx, name, version, &json).await?;
    }
    if let Some(label) = &label {
        db::plugins::set_label(&mut *tx, name, version, label).await?;
    }
    db::plugins::audit(&mut *tx, actor, "upload", name, None, Some(version)).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, version, sha256 = %loaded.sha256, wit = loaded.wit_version(), actor = ?actor, "plugin_uploaded");
    keep(runtime, loaded.clone()).await;
    Ok(Uploaded { name: name.to_string(), version, sha256: loaded.sha256.clone(), label, wit: loaded.wit_version() })
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
    let Some(wit) = db::plugins::wit(&mut *tx, name, version).await? else {
        return Err(ApiError::not_found());
    };
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
    db::plugins::push_activation(&mut *tx, name, Some(version), actor).await?;
    db::plugins::audit(&mut *tx, actor, "activate", name, current, Some(version)).await?;
    db::plugins::notify(&mut *tx, name).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, from = ?current, to = version, wit = %wit, actor = ?actor, "plugin_activated");
    Ok((current, version))
}

/// Undoes the newest activation: back to the version active before it (repeated, it walks
/// the activation history back: v3 → v2 → v1), or to the policy's file when that activation
/// came first after a deactivation. Returns `(from, to)`; `None` is the policy's file.
pub async fn rollback(pool: &PgPool, name: &str, actor: Option<Uuid>) -> Result<(Option<i32>, Option<i32>), ApiError> {
    check_name(name)?;
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    let live = db::plugins::live_activations(&mut *tx, name).await?;
    let (Some(&(top, from)), Some(&(_, to))) = (live.first(), live.get(1)) else {
        if live.is_empty() && db::plugins::active(&mut *tx, name).await?.is_none() {
            return Err(ApiError::not_found());
        }
        return Err(ApiError::new(Code::Conflict, "no earlier activation to roll back to"));
    };
    db::plugins::undo_activation(&mut *tx, top).await?;
    match to {
        Some(v) => db::plugins::set_active(&mut *tx, name, v, from, actor).await?,
        None => db::plugins::clear_active(&mut *tx, name).await?,
    }
    db::plugins::audit(&mut *tx, actor, "rollback", name, from, to).await?;
    db::plugins::notify(&mut *tx, name).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, from = ?from, to = ?to, actor = ?actor, "plugin_rolled_back");
    Ok((from, to))
}

/// No registry version active: the policy's file serves again. Recorded in the activation
/// history (a rollback re-activates the version it replaced) and the audit trail. Returns
/// the version that was active (`None`: already deactivated, nothing changed).
pub async fn deactivate(pool: &PgPool, name: &str, actor: Option<Uuid>) -> Result<Option<i32>, ApiError> {
    check_name(name)?;
    let mut tx = pool.begin().await?;
    db::plugins::lock_name(&mut *tx, name).await?;
    let Some((current, _)) = db::plugins::active(&mut *tx, name).await? else {
        return Ok(None);
    };
    db::plugins::clear_active(&mut *tx, name).await?;
    db::plugins::push_activation(&mut *tx, name, None, actor).await?;
    db::plugins::audit(&mut *tx, actor, "deactivate", name, Some(current), None).await?;
    db::plugins::notify(&mut *tx, name).await?;
    tx.commit().await?;
    tracing::info!(plugin = name, from = current, actor = ?actor, "plugin_deactivated");
    Ok(Some(current))
}

/// Push and activate accept only names a policy declares (`[plugins.<name>]`): a version no
/// route can serve is a mistake (a typo, a missing policy change).
pub fn declared(policies: &crate::policy::PolicySet, name: &str) -> Result<(), ApiError> {
    check_name(name)?;
    if policies.plugins.contains_key(name) {
        return Ok(());
    }
    let mut known: Vec<&str> = policies.plugins.keys().map(String::as_str).collect();
    known.sort();
    Err(ApiError::new(
        Code::PluginUnknown,
        format!("no policy declares a plugin named {name:?} (add [plugins.{name}] to a policy first); declared: {}", known.join(", ")),
    ))
}

/// What `x-plugin-version` says for a registry version: the author's label with the registry
/// number as semver build metadata (`1.2.0+r3`), or the number alone without a label.
pub fn served_label(version: i32, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("{l}+r{version}"),
        None => version.to_string(),
    }
}

/// A component starts with the WebAssembly magic `\0asm`; anything else (text, an archive, a
/// native binary) is refused with that said, not with a parser's complaint about its bytes.
fn check_wasm(bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.starts_with(b"\0asm") {
        return Ok(());
    }
    Err(ApiError::new(
        Code::PluginRejected,
        "not a WebAssembly component: the body must be the .wasm file's bytes (they start with \\0asm), \
         e.g. target/wasm32-wasip2/release/<crate>.wasm from `cargo build --release --target wasm32-wasip2`",
    ))
}

/// The manifest's `[plugin] version`, when the component carries a manifest.
pub async fn list(pool: &PgPool) -> Result<serde_json::Value, ApiError> {
    let rows = db::plugins::list(pool).await?;
    let mut manifests = db::plugin_storage::all_manifests(pool).await?;
    let labels: std::collections::HashMap<(String, i32), Option<String>> =
        db::plugins::labels(pool).await?.into_iter().map(|(n, v, l)| ((n, v), l)).collect();
    Ok(json!({ "plugins": rows.iter().map(|r| {
        let label = labels.get(&(r.name.clone(), r.version)).cloned().flatten();
        let mut v = json!({
            "name": r.name, "version": r.version, "label": label,
            "served_as": served_label(r.version, label.as_deref()),
            "sha256": r.sha256, "wit": r.wit_world, "wit_world": r.wit_world,
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
    let active = db::plugins::all_active_labeled(&state.pool).await?;
    restore_files(state, only, &active).await;
    for (name, version, sha, label) in active {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let label = served_label(version, label.as_deref());
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
                let wit = loaded.wit_version();
                state.set_plugin(&name, loaded);
                tracing::info!(plugin = %name, version, wit, "plugin_swapped");
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

/// Declared plugins with no active registry version serve their policy file: after a
/// deactivation (or a rollback past the first activation) a replica still serving a registry
/// version loads the file again.
async fn restore_files(state: &AppState, only: Option<&str>, active: &[(String, i32, String, Option<String>)]) {
    let routing = state.routing();
    for d in routing.policies.plugins.values() {
        if only.is_some_and(|o| o != d.name) || active.iter().any(|a| a.0 == d.name) {
            continue;
        }
        let Some(loaded) = state.plugin(&d.name) else { continue };
        let from_file = match &d.version {
            Some(v) => loaded.version == *v,
            None => loaded.version.starts_with("sha256:"),
        };
        if from_file {
            continue;
        }
        let Some(file) = &d.file else {
            // Registry-only: nothing to go back to; its routes answer 503 until an activation.
            state.unset_plugin(&d.name);
            tracing::info!(plugin = %d.name, "plugin_unloaded_registry_only");
            continue;
        };
        let path = state.plugin_dir.join(file);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(plugin = %d.name, path = %path.display(), error = %e, "plugin_swap_failed");
                continue;
            }
        };
        let label = d.version.clone().unwrap_or_else(|| format!("sha256:{}", &crate::plugin::digest(&bytes)[..12]));
        match compile(&state.runtime, &d.name, &label, bytes).await {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                keep(&state.runtime, loaded.clone()).await;
                let wit = loaded.wit_version();
                state.set_plugin(&d.name, loaded);
                tracing::info!(plugin = %d.name, version = %label, wit, "plugin_swapped_to_file");
                state.metrics.plugin_activation(&d.name, "swapped");
            }
            Err(e) => {
                tracing::error!(plugin = %d.name, error = %e, "plugin_swap_failed");
                state.metrics.plugin_activation(&d.name, "failed");
            }
        }
    }
}
