//! `[plugins.<name>]`: the component files routes may target.

use std::collections::HashMap;

use serde::Deserialize;

use super::{valid_name, Fail};

/// A plugin binary declared by `[plugins.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginSpec {
    /// Path of the component, relative to the plugin directory (`GATEWAY_PLUGIN_DIR`) or
    /// absolute. None: a registry-only plugin, served once a version is activated.
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// A declared plugin.
#[derive(Debug, Clone)]
pub struct PluginDecl {
    pub name: String,
    /// None: registry-only (no file to fall back to; 503 until a version is activated).
    pub file: Option<String>,
    pub version: Option<String>,
    pub source: String,
}

/// Adds one file's plugin declarations, refusing duplicates and bad names.
pub(super) fn collect(specs: &HashMap<String, PluginSpec>, file: &str, fail: &Fail<'_>, plugins: &mut HashMap<String, PluginDecl>) -> crate::Result<()> {
    let mut names: Vec<_> = specs.keys().cloned().collect();
    names.sort();
    for name in names {
        let p = &specs[&name];
        if let Some(other) = plugins.get(&name) {
            return Err(fail(None, format!("plugin {name:?} already declared in {}", other.source)));
        }
        if !valid_name(&name) {
            return Err(fail(None, format!("plugin name {name:?}: use lower-case letters, digits and -")));
        }
        plugins.insert(name.clone(), PluginDecl { name, file: p.file.clone(), version: p.version.clone(), source: file.to_string() });
    }
    Ok(())
}
